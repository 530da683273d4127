"""Integration fixtures: the three-host test bed (tests/testbed/bed).

The session fixture `bed` runs `tests/testbed/bed up` once (idempotent: a no-op when the bed is
already up and healthy) and leaves the bed up afterwards, so reruns are fast. It needs root.
"""

import os
import subprocess
from dataclasses import dataclass, field

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BED_SCRIPT = os.path.join(REPO, "tests", "testbed", "bed")
HOSTS = ("hv1", "hv2", "hv3")


@dataclass
class Bed:
    repo: str
    state: str
    script: str
    inventory: str
    group_vars: str
    controller_key: str
    known_hosts: str
    addresses: dict = field(default_factory=dict)  # {"hv1": "198.51.100.11", ...}

    def run(self, *args, check=True, timeout=180):
        """Run `bed ARGS...`; returns the CompletedProcess (text, stdout/stderr captured)."""
        proc = subprocess.run(
            [self.script, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"bed {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def ssh_argv(self, host, known_hosts=None):
        """ssh as the controller does: generated key, strict host key checking."""
        return [
            "ssh",
            "-i", self.controller_key,
            "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=10",
            f"root@{self.addresses[host]}",
        ]

    def ssh(self, host, command, check=True, timeout=60, known_hosts=None):
        proc = subprocess.run(
            [*self.ssh_argv(host, known_hosts), command],
            capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"ssh {host} {command!r} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc


@pytest.fixture(scope="session")
def bed():
    if os.geteuid() != 0:
        pytest.fail("the test bed needs root: run the integration tests as root")
    up = subprocess.run([BED_SCRIPT, "up"], capture_output=True, text=True, timeout=600, check=False)
    if up.returncode != 0:
        pytest.fail(f"tests/testbed/bed up failed ({up.returncode}):\n{up.stdout}\n{up.stderr}")
    info = subprocess.run([BED_SCRIPT, "info"], capture_output=True, text=True, timeout=30, check=True)
    kv = dict(line.split("=", 1) for line in info.stdout.splitlines() if "=" in line)
    net = kv["subnet"].rsplit(".", 1)[0]
    yield Bed(
        repo=kv["repo"],
        state=kv["state"],
        script=BED_SCRIPT,
        inventory=kv["inventory"],
        group_vars=kv["group_vars"],
        controller_key=kv["controller_key"],
        known_hosts=kv["known_hosts"],
        addresses={h: f"{net}.{11 + i}" for i, h in enumerate(HOSTS)},
    )


@pytest.fixture
def guest(bed):
    """make(name, host="hv1", start=True, **bed_guest_options) -> name; removed afterwards with
    whatever a resize of it may have left (claims, markers, one-off keys) on every host."""
    made = []

    def make(name, host="hv1", start=True, **kw):
        bed.run("rm-guest", name)
        args = ["guest", name, "--host", host]
        for key, value in kw.items():
            args += ["--" + key.replace("_", "-"), str(value)]
        if not start:
            args.append("--no-start")
        bed.run(*args)
        made.append(name)
        return name

    yield make
    for name in made:
        bed.run("rm-guest", name, check=False)
        for h in HOSTS:
            bed.ssh(h, "rm -rf /var/lib/libvirt/hvresize/migrations/* /var/lib/libvirt/hvresize/xfer "
                       "/var/lib/libvirt/hvresize/maintenance.json; "
                       "rm -f /var/lib/libvirt/shared/.hvresize-* /var/lib/libvirt/images/.hvresize-*; "
                       "sed -i '/hvresize-migration:/d' /root/.ssh/authorized_keys", check=False)
