"""Helpers for the resize integration tests: run playbooks, look at hosts over ssh."""

import json
import os
import re
import signal
import subprocess
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(REPO, ".venv", "bin")
HOSTS = ("hv1", "hv2", "hv3")
STATE_DIR = "/var/lib/libvirt/hvresize"
GIB = 1024 ** 3


def env():
    e = dict(os.environ)
    e["PATH"] = VENV_BIN + ":" + e.get("PATH", "")
    e["ANSIBLE_CONFIG"] = os.path.join(REPO, "ansible.cfg")
    e["ANSIBLE_NOCOLOR"] = "1"
    e["ANSIBLE_FORCE_COLOR"] = "0"
    return e


def playbook(bed, name, *args, check=False, **extra):
    argv = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", bed.inventory, os.path.join(REPO, "playbooks", name)]
    for key, value in extra.items():
        argv += ["-e", json.dumps({key: value}) if isinstance(value, (dict, list)) else "%s=%s" % (key, value)]
    argv += list(args)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env(), cwd=REPO, check=False)
    if check and proc.returncode != 0:
        raise AssertionError("ansible-playbook %s failed (%d):\n%s\n%s" % (name, proc.returncode, proc.stdout[-6000:],
                                                                           proc.stderr[-3000:]))
    return proc


def host_facts(bed, host, inventory=None):
    """virt_host_facts of one host, through an ad-hoc ansible call."""
    e = env()
    e["ANSIBLE_CALLBACK_RESULT_FORMAT"] = "json"
    proc = subprocess.run([os.path.join(VENV_BIN, "ansible"), host, "-i", inventory or bed.inventory,
                           "-m", "hypervisor.resize.virt_host_facts"],
                          capture_output=True, text=True, timeout=120, env=e, cwd=REPO, check=True)
    return json.loads(proc.stdout.split("=>", 1)[1])["hypervisor"]


def start_playbook(bed, name, inventory, **extra):
    argv = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", inventory, os.path.join(REPO, "playbooks", name)]
    for key, value in extra.items():
        argv += ["-e", "%s=%s" % (key, value)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(), cwd=REPO)


def recap(proc):
    """{host: {ok, changed, failed, ...}} from the PLAY RECAP."""
    out = {}
    for m in re.finditer(r"^(\S+)\s+:\s+(.*)$", proc.stdout, re.M):
        counts = dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2)))
        if counts:
            out[m.group(1)] = counts
    return out


def sh(bed, host, command):
    return bed.ssh(host, command).stdout


def domains(bed, host, all_=True):
    out = sh(bed, host, "virsh -q -c qemu:///system list %s --name" % ("--all" if all_ else ""))
    return set(line.strip() for line in out.splitlines() if line.strip())


def where(bed, vm):
    """{host: state} of every host where vm is defined."""
    out = {}
    for h in HOSTS:
        if vm in domains(bed, h):
            out[h] = sh(bed, h, "virsh -c qemu:///system domstate %s" % vm).strip()
    return out


def dominfo(bed, host, vm):
    """vCPUs now (running, or of the definition), the definition's memory (<currentMemory>: the
    flavor's; <memory> above it is a hot-plug ceiling, see ceilings()) and the power state."""
    out = sh(bed, host, "virsh -c qemu:///system dominfo %s" % vm)
    info = dict((k.strip(), v.strip()) for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line))
    return {"vcpus": int(info["CPU(s)"]), "memory_kib": ceilings(bed, host, vm)["memory_kib"], "state": info["State"]}


def ceilings(bed, host, vm):
    """The definition's size and its hot-plug ceilings: vcpus (current), max_vcpus, memory_kib
    (<currentMemory>), max_memory_kib (<memory>)."""
    xml = sh(bed, host, "virsh -c qemu:///system dumpxml --inactive %s" % vm)
    vcpu = re.search(r"<vcpu([^>]*)>(\d+)</vcpu>", xml)
    current = re.search(r"current='(\d+)'", vcpu.group(1))
    cur = re.search(r"<currentMemory unit='KiB'>(\d+)</currentMemory>", xml)
    mem = re.search(r"<memory unit='KiB'>(\d+)</memory>", xml)
    return {"vcpus": int(current.group(1) if current else vcpu.group(2)), "max_vcpus": int(vcpu.group(2)),
            "memory_kib": int(cur.group(1) if cur else mem.group(1)), "max_memory_kib": int(mem.group(1))}


def image(bed, host, path):
    return json.loads(sh(bed, host, "qemu-img info --force-share --output=json %s" % path))


def sha256(bed, host, path):
    return sh(bed, host, "sha256sum %s" % path).split()[0]


def exists(bed, host, path):
    return bed.ssh(host, "test -e %s" % path, check=False).returncode == 0


def macs(bed, host, vm):
    out = sh(bed, host, "virsh -c qemu:///system domiflist %s" % vm)
    return sorted(re.findall(r"(?:[0-9a-f]{2}:){5}[0-9a-f]{2}", out))


def report(bed, vm, host):
    bed.run("wait-ready", vm, "--host", host, "--timeout", "120")
    line = bed.run("report", vm, "--host", host).stdout.strip().splitlines()[-1]
    return dict(kv.split("=", 1) for kv in line.split()[1:])


def migrations_dir(bed, host):
    return set(sh(bed, host, "ls %s/migrations 2>/dev/null || true" % STATE_DIR).split())


def transfer_keys(bed, host):
    return int(sh(bed, host, "grep -c hvresize-migration: /root/.ssh/authorized_keys || true").strip() or 0)


def record(bed, host, vm):
    out = bed.ssh(host, "virsh -c qemu:///system metadata %s https://hypervisor-resize.dev/xmlns/migration/1" % vm,
                  check=False)
    if out.returncode != 0:
        return None
    m = re.search(r">(\{.*\})</", out.stdout, re.S)
    return json.loads(m.group(1).replace("&quot;", '"')) if m else None


def nothing_left_on(bed, host, vm):
    """The destination after rollback/revert: no domain, no disk files, no claim, no key."""
    assert vm not in domains(bed, host), "domain %s still defined on %s" % (vm, host)
    assert sh(bed, host, "ls /var/lib/libvirt/images/ | grep '^%s' || true" % vm).strip() == ""
    assert migrations_dir(bed, host) == set(), "claim left on %s" % host
    assert transfer_keys(bed, host) == 0, "transfer key left on %s" % host


def playbook_with(bed, inventory, name, *args, **extra):
    """playbook() against another inventory than the bed's (e.g. a copy with extra host_vars)."""
    argv = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", inventory, os.path.join(REPO, "playbooks", name)]
    for key, value in extra.items():
        argv += ["-e", json.dumps({key: value}) if isinstance(value, (dict, list)) else "%s=%s" % (key, value)]
    argv += list(args)
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env(), cwd=REPO, check=False)


def adhoc(bed, host, module, args, inventory=None, timeout=300):
    """One module run ad hoc on one host (`ansible HOST -m MODULE -a JSON`), as an operator or a
    compromised controller step could. Returns (CompletedProcess, the module's result dict or None)."""
    e = env()
    e["ANSIBLE_CALLBACK_RESULT_FORMAT"] = "json"
    proc = subprocess.run([os.path.join(VENV_BIN, "ansible"), host, "-i", inventory or bed.inventory,
                           "-m", module, "-a", json.dumps(args)],
                          capture_output=True, text=True, timeout=timeout, env=e, cwd=REPO, check=False)
    result = None
    if "=>" in proc.stdout:
        text = proc.stdout.split("=>", 1)[1].lstrip()
        try:
            result = json.JSONDecoder().raw_decode(text)[0]
        except ValueError:
            result = None
    return proc, result


def said(proc):
    """The run's output as one line (the YAML callback folds long messages and doubles quotes)."""
    return re.sub(r"\s+", " ", proc.stdout).replace("''", "'")


def report_when(bed, vm, host, ok, timeout=60, what="the guest's report"):
    """The guest's last report once ok(report) holds (the guest reports each change within a second)."""
    deadline = time.monotonic() + timeout
    while True:
        got = report(bed, vm, host)
        if ok(got):
            return got
        if time.monotonic() > deadline:
            raise AssertionError("%s never came: last %s" % (what, got))
        time.sleep(0.5)


def host_file(bed, host, path):
    """Where an in-host path of /var/lib/libvirt lives on this machine (read without ssh: fast)."""
    assert path.startswith("/var/lib/libvirt/")
    return os.path.join(bed.state, "hosts", host, "var-lib-libvirt", path[len("/var/lib/libvirt/"):])


def wait_for(predicate, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out after %s s waiting for %s" % (timeout, what)
        time.sleep(interval)


def kill_run_when(bed, vm, predicate, what, **extra):
    """Run resize.yml and SIGKILL it (its whole process group, as a cancelled AWX job or a dead
    controller ends it) once `predicate` holds."""
    argv = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", bed.inventory, os.path.join(REPO, "playbooks", "resize.yml"),
            "-e", "instance=%s" % vm, "-e", "flavor=m1.small", "-e", "target_host=hv2"]
    for key, value in extra.items():
        argv += ["-e", "%s=%s" % (key, value)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(), cwd=REPO,
                            start_new_session=True)
    try:
        wait_for(predicate, 180, what, interval=0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    return proc


def recover(bed, vm, **extra):
    """recover.yml; a step killed with its controller may still be ending on a host (busy): retry."""
    for _i in range(30):
        proc = playbook(bed, "recover.yml", instance=vm, **extra)
        if proc.returncode == 0 or "is busy" not in proc.stdout:
            break
        time.sleep(1)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return proc
