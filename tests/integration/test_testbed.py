"""The test bed itself: three hosts reached like production hypervisors, and a real tiny guest.

Needs root; the session fixture `bed` (conftest.py) brings the bed up.
"""

import os
import re
import subprocess
import time
import uuid

import pytest

HOSTS = ("hv1", "hv2", "hv3")
URI = "qemu:///system"
GIB = 1024**3
REPORT_RE = re.compile(
    r"^HVR-REPORT nproc=(?P<nproc>\d+) memtotal_kb=(?P<memtotal_kb>\d+) "
    r"disk_bytes=(?P<disk_bytes>\d+) boot_count=(?P<boot_count>\d+) uptime_s=(?P<uptime_s>\d+)\.\d+$"
)


def parse_report(text):
    line = text.strip().splitlines()[-1]
    m = REPORT_RE.match(line)
    assert m, f"not a report line: {line!r}"
    return {k: int(v) for k, v in m.groupdict().items()}


def wait_for(predicate, timeout, what, interval=0.25):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def test_status_reports_all_hosts_up(bed):
    proc = bed.run("status")
    for h in HOSTS:
        assert re.search(rf"^{h}\s+up\s.*libvirtd=ok\s+sshd=ok", proc.stdout, re.M), proc.stdout


def test_generated_inventory(bed):
    with open(bed.inventory, encoding="utf-8") as f:
        inv = f.read()
    for h in HOSTS:
        assert f"{h}: {{ansible_host: {bed.addresses[h]}, hypervisor_migration_address: {h}}}" in inv
    with open(bed.group_vars, encoding="utf-8") as f:
        gv = f.read()
    assert f"ansible_ssh_private_key_file: \"{bed.controller_key}\"" in gv
    assert f"UserKnownHostsFile={bed.known_hosts} -o StrictHostKeyChecking=yes" in gv
    assert "m1.small:  {vcpus: 2, memory_mb: 256, root_gb: 2" in gv


@pytest.mark.parametrize("host", HOSTS)
def test_ssh_with_strict_host_key_checking_reports_own_hostname(bed, host):
    assert bed.ssh(host, "hostname").stdout.strip() == host


def test_ssh_refuses_unknown_host_key(bed, tmp_path):
    # Proves the checking is real: with an empty known_hosts, the same connection must fail.
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    proc = bed.ssh("hv1", "true", check=False, known_hosts=str(empty))
    assert proc.returncode != 0
    assert "Host key verification failed" in proc.stderr


@pytest.mark.parametrize("host", HOSTS)
def test_libvirt_answers_over_ssh(bed, host):
    out = bed.ssh(host, f"virsh -c {URI} uri && virsh -c {URI} hostname").stdout.split()
    assert out == [URI, host]


@pytest.mark.parametrize("host", HOSTS)
def test_hosts_reach_each_other_by_name(bed, host):
    for other in HOSTS:
        if other == host:
            continue
        out = bed.ssh(host, f"getent hosts {other}").stdout.split()
        assert out[:2] == [bed.addresses[other], other]
        bed.ssh(host, f"timeout 5 bash -c '</dev/tcp/{other}/22'")


def test_hosts_have_private_image_directories(bed):
    marker = f"hvr-private-{uuid.uuid4().hex[:8]}"
    path = f"/var/lib/libvirt/images/{marker}"
    bed.ssh("hv1", f"echo hv1 > {path}")
    try:
        assert bed.ssh("hv1", f"cat {path}").stdout.strip() == "hv1"
        for other in ("hv2", "hv3"):
            assert bed.ssh(other, f"test -e {path}", check=False).returncode == 1, other
    finally:
        bed.ssh("hv1", f"rm -f {path}")


def test_same_guest_image_paths_on_every_host(bed):
    sums = set()
    for h in HOSTS:
        out = bed.ssh(
            h, "sha256sum /var/lib/libvirt/boot/hvr-guest.vmlinuz /var/lib/libvirt/boot/hvr-guest.initrd"
        ).stdout
        sums.add(tuple(line.split()[0] for line in out.splitlines()))
    assert len(sums) == 1


@pytest.fixture
def guest_name(bed):
    name = f"hvrt-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    yield name
    bed.run("rm-guest", name, check=False)


def domstate(bed, host, name):
    proc = bed.ssh(host, f"virsh -c {URI} domstate {name}", check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def test_guest_boots_reports_and_keeps_its_disk(bed, guest_name):
    t0 = time.monotonic()
    first = parse_report(bed.run("guest", guest_name, "--host", "hv1").stdout)
    boot_s = time.monotonic() - t0
    assert first["nproc"] == 1
    assert first["boot_count"] == 1
    assert first["disk_bytes"] == 1 * GIB
    assert 64 * 1024 < first["memtotal_kb"] <= 128 * 1024
    assert boot_s < 60, f"guest took {boot_s:.1f} s to boot"
    assert parse_report(bed.run("report", guest_name, "--host", "hv1").stdout) == first

    # The disk sits where production puts it, on hv1 only.
    bed.ssh("hv1", f"test -s /var/lib/libvirt/images/{guest_name}.qcow2")
    for other in ("hv2", "hv3"):
        assert bed.ssh(other, f"virsh -c {URI} list --all --name").stdout.split().count(guest_name) == 0

    # A name already in use is refused.
    dup = bed.run("guest", guest_name, "--host", "hv2", check=False)
    assert dup.returncode != 0 and "already exists" in dup.stderr

    # ACPI shutdown powers the guest off in seconds; the boot counter survives on the disk.
    bed.ssh("hv1", f"virsh -c {URI} shutdown {guest_name}")
    wait_for(lambda: domstate(bed, "hv1", guest_name) == "shut off", 30, "the guest to shut off")
    bed.ssh("hv1", f"virsh -c {URI} start {guest_name}")
    second = parse_report(bed.run("wait-ready", guest_name, "--host", "hv1", "--timeout", "90").stdout)
    assert second["boot_count"] == 2
    assert second["nproc"] == 1
    assert second["disk_bytes"] == 1 * GIB

    bed.run("rm-guest", guest_name)
    for h in HOSTS:
        assert guest_name not in bed.ssh(h, f"virsh -c {URI} list --all --name").stdout.split()
        leftovers = bed.ssh(
            h, f"ls /var/lib/libvirt/images/ /var/log/libvirt/qemu/ | grep -F {guest_name} || true"
        ).stdout
        assert leftovers.strip() == "", f"{h}: {leftovers}"
    # rm-guest is idempotent.
    bed.run("rm-guest", guest_name)


def test_guest_raw_disk_and_flavor(bed, guest_name):
    out = bed.run(
        "guest", guest_name, "--host", "hv2", "--vcpus", "2", "--memory-mb", "256",
        "--disk-gb", "3", "--format", "raw",
    ).stdout
    rep = parse_report(out)
    assert rep["nproc"] == 2
    assert rep["disk_bytes"] == 3 * GIB
    assert 128 * 1024 < rep["memtotal_kb"] <= 256 * 1024
    # sparse: a 3 GiB raw disk allocates almost nothing
    allocated_kb = int(bed.ssh("hv2", f"du -k /var/lib/libvirt/images/{guest_name}.raw").stdout.split()[0])
    assert allocated_kb < 10 * 1024
    bed.run("rm-guest", guest_name)
    assert bed.ssh("hv2", f"ls /var/lib/libvirt/images/{guest_name}.raw", check=False).returncode != 0


def test_guest_takes_hot_plug_and_reports_each_change(bed, guest_name):
    bed.run("guest", guest_name, "--host", "hv3", "--max-vcpus", "2", "--max-memory-mb", "256",
            "--disk-gb", "1")
    xml = bed.ssh("hv3", f"virsh -c {URI} dumpxml --inactive {guest_name}").stdout
    assert "<vcpu placement='static' current='1'>2</vcpu>" in xml and "<memory unit='KiB'>262144</memory>" in xml

    def last():
        return parse_report(bed.run("report", guest_name, "--host", "hv3").stdout)

    # The balloon driver gives back what is above <currentMemory> shortly after boot.
    wait_for(lambda: last()["memtotal_kb"] <= 128 * 1024, 30, "the balloon to reach 128 MiB")
    first = last()
    bed.ssh("hv3", f"virsh -q -c {URI} setvcpus {guest_name} 2 --live && "
                   f"virsh -q -c {URI} setmem {guest_name} 256M --live && "
                   f"virsh -q -c {URI} blockresize {guest_name} vda 2G")
    wait_for(lambda: (last()["nproc"], last()["disk_bytes"]) == (2, 2 * GIB)
             and last()["memtotal_kb"] > first["memtotal_kb"] + 100 * 1024, 30, "the guest to report the change")
    now = last()
    assert now["boot_count"] == 1 and now["uptime_s"] >= first["uptime_s"]


def test_guest_without_balloon_driver_keeps_all_its_memory(bed, guest_name):
    bed.run("guest", guest_name, "--host", "hv3", "--max-memory-mb", "256", "--guest-flags", "noballoon")
    time.sleep(2)
    rep = parse_report(bed.run("report", guest_name, "--host", "hv3").stdout)
    assert rep["memtotal_kb"] > 200 * 1024
    stat = bed.ssh("hv3", f"virsh -c {URI} dommemstat {guest_name}").stdout
    assert "actual 262144" in stat
    bad = bed.run("guest", guest_name + "x", "--host", "hv3", "--guest-flags", "nosuch", check=False)
    assert bad.returncode != 0 and "--guest-flags takes noballoon, noonline, heartbeat, agent and/or writer" in bad.stderr


def test_report_without_guest_fails(bed):
    proc = bed.run("report", "hvrt-no-such-guest", "--host", "hv3", check=False)
    assert proc.returncode != 0
    assert "no HVR-REPORT" in proc.stderr


def test_exec_enters_the_host(bed):
    proc = subprocess.run(
        [bed.script, "exec", "hv2", "hostname"], capture_output=True, text=True, timeout=30, check=True
    )
    assert proc.stdout.strip() == "hv2"


def test_benchmark_helpers_run_inside_a_host_from_a_path_the_host_sees(bed):
    """A checkout under /tmp or /root is invisible inside the bed's hosts (each has its own): the
    benchmarks copy their helpers and the product's code into the host and run them from there."""
    import sys
    sys.path.insert(0, os.path.join(bed.repo, "benchmarks"))
    from benchlib import common  # pylint: disable=import-outside-toplevel

    path = common.host_helper_path("hv2", "hostfacts.py")
    assert not path.startswith(bed.repo) and path.startswith("/var/lib/libvirt/")
    facts = common.helper("hv2", "hostfacts.py")
    assert facts["hypervisor"]["hostname"] == "hv2"
    assert "/var/lib/libvirt/images" in facts["hypervisor"]["storage_roots"]


def test_a_second_checkout_neither_takes_over_nor_tears_down_a_running_bed(bed, tmp_path):
    """Two clones on one machine: the bed's names are machine-wide, so the second clone's `bed up`
    refuses (naming the first), and its `bed down` leaves the first's bed and guests running."""
    import shutil
    other = tmp_path / "clone"
    shutil.copytree(os.path.join(bed.repo, "tests", "testbed"), other / "tests" / "testbed",
                    ignore=shutil.ignore_patterns("generated"))
    name = f"it-twoclones-{uuid.uuid4().hex[:6]}"
    bed.run("guest", name, "--host", "hv1")
    try:
        pid_before = bed.run("exec", "hv1", "pgrep", "-f", f"[g]uest={name},", check=False).stdout
        script = str(other / "tests" / "testbed" / "bed")
        up = subprocess.run([script, "up"], capture_output=True, text=True, timeout=120, check=False)
        assert up.returncode != 0 and f"the test bed of another checkout is up (state: {bed.state})" in up.stderr
        down = subprocess.run([script, "down"], capture_output=True, text=True, timeout=120, check=False)
        assert down.returncode == 0 and "left it up" in down.stderr
        assert bed.run("status").returncode == 0
        state = bed.run("exec", "hv1", "virsh", "-c", URI, "domstate", name).stdout.strip()
        assert state == "running"
        pid_after = bed.run("exec", "hv1", "pgrep", "-f", f"[g]uest={name},", check=False).stdout
        assert pid_before.strip() and pid_after == pid_before, "the guest's QEMU was not restarted"
    finally:
        bed.run("rm-guest", name, check=False)
