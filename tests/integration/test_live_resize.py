"""Live resizes on the real test bed: a running guest takes more vCPUs, memory and disk without a
restart, proved by what the guest itself reports (its boot counter and its uptime say it never
rebooted); what does not fit goes cold and says why; what the guest does not take is undone.
"""

import json
import os
import signal
import subprocess
import time

from resize_lib import (
    GIB,
    REPO,
    STATE_DIR,
    VENV_BIN,
    adhoc,
    ceilings,
    env,
    image,
    migrations_dir,
    playbook,
    record,
    report,
    report_when,
    said,
    sh,
    where,
)

IMG = "/var/lib/libvirt/images/%s.qcow2"
VIRSH = "virsh -q -c qemu:///system "
SETTLED_128 = 100 * 1024  # a 128 MiB guest reports ~90 MiB of MemTotal once its balloon reached 128 MiB


def live_guest(guest, bed, name, **kw):
    """A running guest of 1 vCPU / 128 MiB with hot-plug ceilings of 3 vCPUs / 384 MiB, its balloon
    settled at 128 MiB."""
    vm = guest(name, vcpus=1, memory_mb=128, disk_gb=1, max_vcpus=3, max_memory_mb=384, **kw)
    if "guest_flags" not in kw:
        report_when(bed, vm, "hv1", lambda r: int(r["memtotal_kb"]) < SETTLED_128, what="the balloon at 128 MiB")
    return vm


def running_vcpus(bed, host, vm):
    return int(sh(bed, host, VIRSH + "vcpucount %s --live --active" % vm).strip())


def test_live_upsize_then_live_revert_without_a_reboot(bed, guest):
    vm = live_guest(guest, bed, "it-live")
    before = report(bed, vm, "hv1")
    assert (before["nproc"], before["disk_bytes"], before["boot_count"]) == ("1", str(GIB), "1")

    # Check mode says which path and why, shows the definition's diff, and changes nothing.
    proc = playbook(bed, "resize.yml", "--check", "--diff", check=True, instance=vm, flavor="m1.small")
    out = said(proc)
    assert "resized live (no restart), flavor m1.small" in out and "why live: the VM runs and the change fits its " \
        "hot-plug ceilings (3 vCPUs, 384 MiB)" in out
    assert '+  <vcpu placement="static" current="2">3</vcpu>' in proc.stdout
    assert ceilings(bed, "hv1", vm) == {"vcpus": 1, "max_vcpus": 3, "memory_kib": 131072, "max_memory_kib": 393216}
    assert record(bed, "hv1", vm) is None

    proc = playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small")
    assert "no restart" in said(proc) and "Power off on the source" not in proc.stdout
    assert "(disks grow when the resize is confirmed)" in said(proc)
    assert where(bed, vm) == {"hv1": "running"}
    # The guest took vCPU and memory, without a reboot: same boot, later uptime.
    after = report_when(bed, vm, "hv1", lambda r: r["nproc"] == "2"
                        and int(r["memtotal_kb"]) > int(before["memtotal_kb"]) + 100000)
    assert after["boot_count"] == "1" and float(after["uptime_s"]) > float(before["uptime_s"])
    # The definition follows, so the next boot keeps the size; the ceilings stay. The disk waits for
    # the confirm: until then a revert has nothing to undo there.
    assert ceilings(bed, "hv1", vm) == {"vcpus": 2, "max_vcpus": 3, "memory_kib": 262144, "max_memory_kib": 393216}
    assert image(bed, "hv1", IMG % vm)["virtual-size"] == GIB and after["disk_bytes"] == str(GIB)
    rec = record(bed, "hv1", vm)
    assert (rec["status"], rec["mode"], rec["source"], rec["dest"]) == ("finished", "live", "hv1", "hv1")

    # Revert, live: the memory goes back by the balloon, the definition is the original again; what
    # needs a restart to undo (the hot-plugged vCPU) and what never shrinks (the disk) are named.
    proc = playbook(bed, "revert.yml", check=True, instance=vm)
    out = said(proc)
    assert "left: the running VM keeps 2 vCPUs until it restarts (its definition has 1 again)" in out
    assert image(bed, "hv1", IMG % vm)["virtual-size"] == GIB
    assert ceilings(bed, "hv1", vm) == {"vcpus": 1, "max_vcpus": 3, "memory_kib": 131072, "max_memory_kib": 393216}
    back = report_when(bed, vm, "hv1", lambda r: int(r["memtotal_kb"]) < SETTLED_128)
    assert back["boot_count"] == "1", "revert is live: no reboot"
    rec = record(bed, "hv1", vm)
    assert rec["status"] == "reverted" and "original_xml" not in rec
    # Until that restart, a live resize is not offered (the running VM is not its definition).
    proc = playbook(bed, "resize.yml", "--check", check=True, instance=vm, flavor="m1.small")
    assert "the running VM has 2 vCPUs, its definition 1" in said(proc) and "path: cold" in said(proc)
    # The restart the revert named gives the definition's size back.
    sh(bed, "hv1", VIRSH + "destroy %s && %s start %s" % (vm, VIRSH, vm))
    again = report_when(bed, vm, "hv1", lambda r: r["boot_count"] == "2")
    assert again["nproc"] == "1"


def test_a_cold_resize_leaves_ceilings_that_make_the_next_upsize_live(bed, guest):
    vm = guest("it-live-next", vcpus=1, memory_mb=128, disk_gb=1)  # no ceilings: the first resize is cold
    proc = playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small", target_host="hv2",
                    resize_max_vcpus=3, confirm="true")
    out = said(proc)
    assert "path: cold (the VM is shut down, moved and started): 2 vCPUs exceed the VM's hot-plug ceiling of 1 " \
        "(<vcpu>); 256 MiB of memory exceed the VM's ceiling of 128 MiB (<memory>); resize_target_host is hv2, " \
        "another host: a move is cold" in out
    assert "ceilings for the next live resize: 3 vCPUs, 384 MiB" in out
    assert ceilings(bed, "hv2", vm) == {"vcpus": 2, "max_vcpus": 3, "memory_kib": 262144, "max_memory_kib": 393216}
    moved = report_when(bed, vm, "hv2", lambda r: r["nproc"] == "2" and int(r["memtotal_kb"]) < 240 * 1024)
    assert moved["boot_count"] == "2"

    proc = playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.medium", confirm="true")
    assert "resized live (no restart)" in said(proc) and "confirmed" in said(proc)
    assert where(bed, vm) == {"hv2": "running"}
    got = report_when(bed, vm, "hv2", lambda r: r["nproc"] == "3" and r["disk_bytes"] == str(3 * GIB)
                      and int(r["memtotal_kb"]) > int(moved["memtotal_kb"]) + 100000)
    assert got["boot_count"] == "2" and float(got["uptime_s"]) > float(moved["uptime_s"])
    assert ceilings(bed, "hv2", vm) == {"vcpus": 3, "max_vcpus": 3, "memory_kib": 393216, "max_memory_kib": 393216}
    assert record(bed, "hv2", vm)["status"] == "confirmed"
    assert migrations_dir(bed, "hv2") == set()


def test_beyond_the_ceiling_is_cold_and_says_why_and_mode_live_refuses_it_changing_nothing(bed, guest):
    vm = guest("it-live-ceil", vcpus=1, memory_mb=128, disk_gb=1, max_vcpus=2, max_memory_mb=256)
    before = report(bed, vm, "hv1")
    proc = playbook(bed, "resize.yml", "--check", check=True, instance=vm, flavor="m1.medium")
    assert "path: cold (the VM is shut down, moved and started): 3 vCPUs exceed the VM's hot-plug ceiling of 2 " \
        "(<vcpu>); 384 MiB of memory exceed the VM's ceiling of 256 MiB (<memory>)" in said(proc)

    proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.medium", mode="live")
    assert proc.returncode != 0
    assert "VM it-live-ceil cannot be resized live: 3 vCPUs exceed the VM's hot-plug ceiling of 2 (<vcpu>); " \
        "384 MiB of memory exceed the VM's ceiling of 256 MiB (<memory>)" in said(proc)
    assert "nothing was changed; resize_mode=auto resizes it cold instead" in said(proc)
    # Nothing changed: same definition, same running VM, same boot, no record.
    assert ceilings(bed, "hv1", vm) == {"vcpus": 1, "max_vcpus": 2, "memory_kib": 131072, "max_memory_kib": 262144}
    assert where(bed, vm) == {"hv1": "running"} and record(bed, "hv1", vm) is None
    assert report(bed, vm, "hv1")["boot_count"] == before["boot_count"] == "1"

    proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small", mode="fast")
    assert proc.returncode != 0 and "mode must be auto, live or cold, got fast" in said(proc)
    assert "failed=1" in proc.stdout and proc.stdout.count("failed=1") == 1, "one error, not one per host"


def test_a_guest_that_does_not_take_the_memory_is_rolled_back_live(bed, guest):
    # No balloon driver: the guest keeps all 384 MiB whatever the balloon's target says.
    vm = live_guest(guest, bed, "it-live-nob", guest_flags="noballoon")
    before = report(bed, vm, "hv1")
    proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small", resize_live_timeout=5)
    assert proc.returncode != 0
    out = said(proc)
    assert "live resize failed at step memory-taken: the guest did not take the new memory within 5s: its balloon " \
        "holds 384 MiB, not 256 MiB (no balloon driver in the guest?)" in out
    assert "undone: memory 128 -> 256 MiB (balloon, in the running VM and its definition)" in out
    assert "The VM runs on hv1 with its original definition" in out
    # Memory is proved before anything that cannot be undone live: no vCPU was plugged, no disk grown.
    assert ceilings(bed, "hv1", vm) == {"vcpus": 1, "max_vcpus": 3, "memory_kib": 131072, "max_memory_kib": 393216}
    assert running_vcpus(bed, "hv1", vm) == 1
    assert image(bed, "hv1", IMG % vm)["virtual-size"] == GIB
    got = report(bed, vm, "hv1")
    assert (got["nproc"], got["disk_bytes"], got["boot_count"]) == ("1", str(GIB), "1")
    rec = record(bed, "hv1", vm)
    assert rec["status"] == "error" and rec["rolled_back"] and rec["applied"] == ["memory"]
    # Closed: the next resize is not blocked (and goes cold here, naming no open migration).
    proc = playbook(bed, "resize.yml", "--check", check=True, instance=vm, flavor="m1.small", mode="cold")
    assert "path: cold" in said(proc) and before["boot_count"] == "1"


def test_a_live_resize_killed_half_way_is_rolled_back_by_recover(bed, guest):
    vm = live_guest(guest, bed, "it-live-kill", guest_flags="noballoon")
    uuid = sh(bed, "hv1", VIRSH + "domuuid %s" % vm).strip()
    mid = "7d0c2b1e-5a4f-4c3d-9e8f-0a1b2c3d4e5f"
    args = {"instance": vm, "uuid": uuid, "migration_id": mid, "flavor": {"vcpus": 2, "memory_mb": 256, "root_gb": 2},
            "old_flavor": {"vcpus": 1, "memory_mb": 128}, "verify_timeout": 120,
            "disks": [{"target": "vda", "path": IMG % vm, "before": GIB, "after": 2 * GIB}]}
    run = subprocess.Popen([os.path.join(VENV_BIN, "ansible"), "hv1", "-i", bed.inventory, "-m",
                            "hypervisor.resize.virt_live_resize", "-a", json.dumps(args)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env(), cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while (record(bed, "hv1", vm) or {}).get("applied") != ["memory"]:
            assert time.monotonic() < deadline and run.poll() is None, "the module never applied the memory"
            time.sleep(0.2)
        # Killed on the host while it waits for the guest: the VM's lock names the process.
        holder = json.loads(sh(bed, "hv1", "cat %s/vms/%s.lock" % (STATE_DIR, uuid.lower())).strip("\x00 \n"))
        assert holder["operation"] == "live resize"
        bed.ssh("hv1", "kill -KILL %d" % holder["pid"])
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(timeout=60)
    rec = record(bed, "hv1", vm)
    assert (rec["status"], rec["applied"]) == ("migrating", ["memory"])
    assert ceilings(bed, "hv1", vm)["memory_kib"] == 262144, "the applied step is in the definition"
    assert migrations_dir(bed, "hv1") == {mid}, "the increase stays claimed until the run is ended"

    proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small")
    assert proc.returncode != 0 and "did not end: run playbooks/recover.yml" in said(proc)
    proc = playbook(bed, "recover.yml", check=True, instance=vm)
    assert ceilings(bed, "hv1", vm) == {"vcpus": 1, "max_vcpus": 3, "memory_kib": 131072, "max_memory_kib": 393216}
    assert running_vcpus(bed, "hv1", vm) == 1 and image(bed, "hv1", IMG % vm)["virtual-size"] == GIB
    rec = record(bed, "hv1", vm)
    assert rec["status"] == "error" and rec["rolled_back"] and migrations_dir(bed, "hv1") == set()
    assert report(bed, vm, "hv1")["boot_count"] == "1"
    # Ad hoc, the module refuses a VM that is not running, naming what to do.
    sh(bed, "hv1", VIRSH + "destroy %s" % vm)
    proc, result = adhoc(bed, "hv1", "hypervisor.resize.virt_live_resize", dict(args, migration_id=mid.replace("7", "8")))
    assert proc.returncode != 0 and "the VM is not running; a live resize needs a running VM" in result["msg"]


def test_the_guest_agent_onlines_and_proves_the_new_vcpus_and_an_agent_that_does_not_answer_is_said(bed, guest):
    # The guest onlines nothing by itself (noonline); its agent does what it is asked.
    vm = live_guest(guest, bed, "it-live-agent", guest_flags="agent,noonline")
    report_when(bed, vm, "hv1", lambda r: int(r["memtotal_kb"]) < SETTLED_128, what="the balloon at 128 MiB")
    proc = playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small")
    assert "wait up to 60s for the guest to have 2 vCPUs online (asked through its guest agent)" in said(proc)
    got = report_when(bed, vm, "hv1", lambda r: r["nproc"] == "2")
    assert got["boot_count"] == "1"
    playbook(bed, "revert.yml", check=True, instance=vm)

    # A channel without an agent behind it: the vCPUs are proved by QEMU only, and the run says so.
    quiet = live_guest(guest, bed, "it-live-noagent", guest_flags="noonline")
    sh(bed, "hv1", VIRSH + "destroy %s" % quiet)
    sh(bed, "hv1", "virsh -q -c qemu:///system dumpxml --inactive %s > /tmp/%s.xml && sed -i "
                   "\"s|</devices>|<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/>"
                   "</channel></devices>|\" /tmp/%s.xml && %s define /tmp/%s.xml >/dev/null && %s start %s"
                   % (quiet, quiet, quiet, VIRSH, quiet, VIRSH, quiet))
    report_when(bed, quiet, "hv1", lambda r: int(r["memtotal_kb"]) < SETTLED_128, what="the balloon at 128 MiB")
    proc = playbook(bed, "resize.yml", check=True, instance=quiet, flavor="m1.small", resize_live_timeout=6)
    assert "the guest agent did not answer" in said(proc) and "not checked" in said(proc)
    assert record(bed, "hv1", quiet)["status"] == "finished"
    assert report(bed, quiet, "hv1")["nproc"] == "1", "nobody onlined it: that is what the warning says"
