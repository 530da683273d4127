"""One operation per VM, and every failure recoverable, on the real bed: concurrent runs on one VM,
a revert during a copy, a confirm racing a revert, a destination whose libvirtd dies, and a
controller killed mid-way, then recover.yml. Assertions are about where the VM runs, its size, its
disks, and what must be gone on every host and on the controller."""

import glob
import os
import signal
import subprocess

from resize_lib import (
    GIB,
    HOSTS,
    STATE_DIR,
    dominfo,
    exists,
    host_file,
    kill_run_when,
    migrations_dir,
    nothing_left_on,
    playbook,
    record,
    recover,
    report,
    sh,
    sha256,
    start_playbook,
    transfer_keys,
    wait_for,
    where,
)

IMG = "/var/lib/libvirt/images/%s.qcow2"
RAW = "/var/lib/libvirt/images/%s.raw"
MIB = 1024 * 1024
KEY_DIR = os.path.expanduser("~/.ansible/hvresize-keys")


def no_leftovers(bed, vm, mid=None):
    """Nothing of a migration anywhere: claims, keys, part files, progress, one-off private keys."""
    for h in HOSTS:
        assert migrations_dir(bed, h) == set(), "claim left on %s" % h
        assert transfer_keys(bed, h) == 0, "transfer key left on %s" % h
        assert sh(bed, h, "find %s/xfer %s/progress -mindepth 1 2>/dev/null || true" % (STATE_DIR, STATE_DIR)) \
            .strip() == "", "one-off key or progress file left on %s" % h
        assert sh(bed, h, "ls /var/lib/libvirt/images/ | grep hvresize || true").strip() == "", h
    if mid:
        assert not os.path.exists(os.path.join(KEY_DIR, mid)), "one-off key left on the controller"


def data_guest(guest, bed, name, data_mib=160, start=False):
    """A raw guest with `data_mib` MiB of random data: a copy with a bandwidth limit takes a while."""
    vm = guest(name, start=start, vcpus=1, memory_mb=128, disk_gb=2, format="raw")
    sh(bed, "hv1", "dd if=/dev/urandom of=%s bs=1M seek=64 count=%d conv=notrunc status=none" % (RAW % vm, data_mib))
    return vm


def test_concurrent_resizes_of_one_vm_exactly_one_proceeds(bed, guest):
    vm = guest("it-split", vcpus=1, memory_mb=128, disk_gb=1)
    for targets in (("hv2", "hv3"), ("hv3", "hv2", "hv3", "hv2")):
        procs = [start_playbook(bed, "resize.yml", bed.inventory, instance=vm, flavor="m1.small", target_host=t)
                 for t in targets]
        outs = [p.communicate(timeout=600)[0] for p in procs]
        won = [t for t, p in zip(targets, procs) if p.returncode == 0]
        assert len(won) == 1, "exactly one of %d may proceed: %s\n%s" % (
            len(targets), [p.returncode for p in procs], "\n=====\n".join(o[-1500:] for o in outs))
        dest = won[0]
        # The VM runs in one place only; the source keeps the shut-off original for revert.
        assert where(bed, vm) == {"hv1": "shut off", dest: "running"}
        assert record(bed, "hv1", vm)["status"] == "post-migrating"
        assert record(bed, "hv1", vm)["id"] == record(bed, dest, vm)["id"]
        for out, p in zip(outs, procs):
            if p.returncode != 0:
                # Refused by the source's lock or record, by the controller seeing it busy or open, or by
                # a destination where another of these runs already holds the VM's claim.
                assert any(why in out for why in (
                    "another operation on this VM is running", "is busy", "another migration of this VM is open",
                    "in the middle of a resize", "of this VM is still open here")), out
        other = "hv3" if dest == "hv2" else "hv2"
        assert migrations_dir(bed, other) == set() and transfer_keys(bed, other) == 0
        # Back to the start for the next round: revert (the losers changed nothing to undo).
        playbook(bed, "revert.yml", check=True, instance=vm)
        assert where(bed, vm) == {"hv1": "running"} and dominfo(bed, "hv1", vm)["vcpus"] == 1


def test_revert_during_a_copy_is_refused_and_the_copy_goes_on(bed, guest):
    vm = data_guest(guest, bed, "it-revcopy")
    before = sha256(bed, "hv1", RAW % vm)
    proc = start_playbook(bed, "resize.yml", bed.inventory, instance=vm, flavor="m1.small", target_host="hv2",
                          resize_bandwidth_limit=20)
    progress = host_file(bed, "hv1", STATE_DIR + "/progress")
    wait_for(lambda: os.path.isdir(progress) and os.listdir(progress), 120, "the copy to start")
    rev = playbook(bed, "revert.yml", instance=vm)
    assert rev.returncode != 0
    assert "is busy: hv1 runs power-off and copy of migration" in rev.stdout, rev.stdout[-3000:]
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out[-3000:]
    assert "Traceback" not in out and "FileNotFoundError" not in out
    assert where(bed, vm) == {"hv1": "shut off", "hv2": "shut off"}
    assert sha256(bed, "hv2", RAW % vm) == before
    playbook(bed, "revert.yml", check=True, instance=vm)
    assert sha256(bed, "hv1", RAW % vm) == before
    no_leftovers(bed, vm)


def test_confirm_and_revert_started_together_cannot_both_pass(bed, guest):
    for attempt in range(2):
        vm = guest("it-cvr%d" % attempt, vcpus=1, memory_mb=128, disk_gb=1)
        playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small", target_host="hv2")
        procs = {name: start_playbook(bed, name, bed.inventory, instance=vm) for name in ("confirm.yml", "revert.yml")}
        outs = {name: p.communicate(timeout=600)[0] for name, p in procs.items()}
        ok = [name for name, p in procs.items() if p.returncode == 0]
        placed = where(bed, vm)
        assert len(ok) <= 1 and placed in ({"hv2": "running"}, {"hv1": "running"}), (placed, outs)
        if placed == {"hv2": "running"}:
            assert record(bed, "hv2", vm)["status"] in ("confirmed", "confirming")
            if record(bed, "hv2", vm)["status"] == "confirming":  # the confirm lost a race to nothing: finish it
                playbook(bed, "recover.yml", check=True, instance=vm, action="resume")
            assert record(bed, "hv2", vm)["status"] == "confirmed"
            assert not exists(bed, "hv1", IMG % vm)
        else:
            assert record(bed, "hv1", vm)["status"] == "reverted"
            nothing_left_on(bed, "hv2", vm)


def test_the_source_comes_back_when_the_destinations_libvirtd_dies(bed, guest):
    vm = guest("it-deadlv", vcpus=1, memory_mb=128, disk_gb=1)
    proc = start_playbook(bed, "resize.yml", bed.inventory, instance=vm, flavor="m1.small", target_host="hv2")
    keys = os.path.join(bed.state, "hosts", "hv2", "root-home", ".ssh", "authorized_keys")
    # prep is done with libvirt once it authorized the key; kill hv2's libvirtd right then.
    wait_for(lambda: os.path.exists(keys) and "hvresize-migration:" in open(keys).read(), 120, "prep on hv2")
    pid = int(bed.run("exec", "hv2", "cat", "/run/libvirtd.pid").stdout.strip())
    os.kill(pid, signal.SIGKILL)
    out = proc.communicate(timeout=600)[0]
    try:
        assert proc.returncode != 0
        assert "Rolled back: the VM is on hv1 with its original size and disks" in out, out[-4000:]
        assert "run playbooks/recover.yml -e instance=%s once it answers" % vm in out
        assert "Traceback" not in out
        # The source works: the VM runs there again, its original disk booted a second time.
        got = report(bed, vm, "hv1")
        assert (got["nproc"], got["disk_bytes"], got["boot_count"]) == ("1", str(GIB), "2")
        assert record(bed, "hv1", vm)["rolled_back"] is True
        assert migrations_dir(bed, "hv2") != set(), "hv2's cleanup is pending"
    finally:
        bed.run("up", timeout=600)  # libvirtd back on hv2, as a restarted daemon would be
    playbook(bed, "recover.yml", check=True, instance=vm)
    nothing_left_on(bed, "hv2", vm)
    no_leftovers(bed, vm)
    assert where(bed, vm) == {"hv1": "running"}
    again = playbook(bed, "recover.yml", check=True, instance=vm)
    assert "has no migration to recover" in again.stdout


def _mid(bed, vm):
    recs = glob.glob(host_file(bed, "hv2", STATE_DIR + "/migrations/*/record.json"))
    return os.path.basename(os.path.dirname(recs[0])) if recs else None


def _wait_not_busy(bed, vm):
    """A killed controller leaves the async copy job running on the source: it ends by itself."""
    wait_for(lambda: subprocess.run([bed.script, "exec", "hv1", "sh", "-c",
                                     "pgrep -f '[v]irt_power_off_migrate' >/dev/null"], check=False).returncode != 0,
             300, "the copy job on hv1 to end", interval=0.5)


def test_controller_killed_during_the_copy_then_rollback(bed, guest):
    vm = data_guest(guest, bed, "it-killcopy", start=True)
    before = sha256(bed, "hv1", RAW % vm)
    progress = host_file(bed, "hv1", STATE_DIR + "/progress")
    kill_run_when(bed, vm, lambda: os.path.isdir(progress) and os.listdir(progress), "the copy to start",
                  resize_bandwidth_limit=40)
    mid = _mid(bed, vm)
    assert mid and os.path.isdir(os.path.join(KEY_DIR, mid)), "the killed run left its key on the controller"
    _wait_not_busy(bed, vm)
    assert sha256(bed, "hv1", RAW % vm) == before, "the source disk is untouched while the VM is off"
    proc = recover(bed, vm)
    assert "rolled back migration %s" % mid in proc.stdout
    assert where(bed, vm) == {"hv1": "running"}
    got = report(bed, vm, "hv1")
    assert (got["nproc"], got["boot_count"]) == ("1", "2"), "the original disk booted again"
    nothing_left_on(bed, "hv2", vm)
    no_leftovers(bed, vm, mid)


def test_controller_killed_during_the_copy_then_resume(bed, guest):
    vm = data_guest(guest, bed, "it-killresume", start=True)
    progress = host_file(bed, "hv1", STATE_DIR + "/progress")
    kill_run_when(bed, vm, lambda: os.path.isdir(progress) and os.listdir(progress), "the copy to start",
                  resize_bandwidth_limit=40)
    mid = _mid(bed, vm)
    _wait_not_busy(bed, vm)
    assert record(bed, "hv1", vm)["status"] == "post-migrating", "the copy job finished without its controller"
    recover(bed, vm, action="resume")
    assert where(bed, vm) == {"hv1": "shut off", "hv2": "running"}
    got = report(bed, vm, "hv2")
    assert (got["nproc"], got["disk_bytes"]) == ("2", str(2 * GIB))
    playbook(bed, "confirm.yml", check=True, instance=vm)
    assert where(bed, vm) == {"hv2": "running"}
    no_leftovers(bed, vm, mid)


def test_controller_killed_during_prep_and_during_finish_then_rollback(bed, guest):
    # During prep: the claim is made on hv2, nothing touched the VM yet.
    vm = guest("it-killprep", vcpus=1, memory_mb=128, disk_gb=1)
    claims = host_file(bed, "hv2", STATE_DIR + "/migrations")
    kill_run_when(bed, vm, lambda: os.path.isdir(claims) and os.listdir(claims), "prep's claim on hv2")
    mid = _mid(bed, vm)
    recover(bed, vm)
    assert where(bed, vm) == {"hv1": "running"} and report(bed, vm, "hv1")["boot_count"] == "1"
    no_leftovers(bed, vm, mid)
    # During finish: the domain is being defined on hv2.
    vm = guest("it-killfinish", vcpus=1, memory_mb=128, disk_gb=1)
    kill_run_when(bed, vm, lambda: vm in sh(bed, "hv2", "virsh -q -c qemu:///system list --all --name"),
                  "the domain on hv2")
    mid = _mid(bed, vm) or (record(bed, "hv2", vm) or {}).get("id")
    recover(bed, vm)
    assert where(bed, vm) == {"hv1": "running"}
    got = report(bed, vm, "hv1")
    assert (got["nproc"], got["disk_bytes"]) == ("1", str(GIB))
    nothing_left_on(bed, "hv2", vm)
    no_leftovers(bed, vm, mid)
