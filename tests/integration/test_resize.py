"""Real resizes on the real test bed: QEMU guests on three libvirt hypervisors reached over ssh.

Every assertion is about a real outcome: where the domain is defined and running, its vCPUs and
memory, the disk's virtual size and checksum, what the guest itself reports, files that must be gone.
"""

import os

import pytest
from resize_lib import (
    GIB,
    HOSTS,
    domains,
    dominfo,
    exists,
    image,
    macs,
    migrations_dir,
    nothing_left_on,
    playbook,
    recap,
    record,
    report,
    sh,
    sha256,
    transfer_keys,
    where,
)

IMG = "/var/lib/libvirt/images/%s.qcow2"


def dest_of(bed, vm, source="hv1"):
    placed = where(bed, vm)
    others = [h for h in placed if h != source]
    assert len(others) == 1, "expected the VM on exactly one other host, found %s" % placed
    return others[0]


def test_resize_running_vm_to_another_host_then_confirm(bed, guest):
    vm = guest("it-resize", vcpus=1, memory_mb=128, disk_gb=1)
    before = report(bed, vm, "hv1")
    assert (before["nproc"], before["disk_bytes"], before["boot_count"]) == ("1", str(GIB), "1")
    src_sum = sha256(bed, "hv1", IMG % vm)
    src_macs = macs(bed, "hv1", vm)

    proc = playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small")
    dest = dest_of(bed, vm)

    # The destination runs the resized VM, on the same disk (boot counter), with its MAC kept.
    assert dominfo(bed, dest, vm) == {"vcpus": 2, "memory_kib": 262144, "state": "running"}
    assert image(bed, dest, IMG % vm)["virtual-size"] == 2 * GIB
    after = report(bed, vm, dest)
    assert (after["nproc"], after["disk_bytes"], after["boot_count"]) == ("2", str(2 * GIB), "2")
    assert int(after["memtotal_kb"]) > int(before["memtotal_kb"]) + 100000
    assert macs(bed, dest, vm) == src_macs
    # The source keeps its backup: defined, shut off, disk byte-identical.
    assert where(bed, vm)["hv1"] == "shut off"
    assert sha256(bed, "hv1", IMG % vm) == src_sum
    # The record says finished on the destination; the one-off key is gone everywhere.
    assert record(bed, dest, vm)["status"] == "finished"
    assert record(bed, "hv1", vm)["status"] == "post-migrating"
    assert all(transfer_keys(bed, h) == 0 for h in HOSTS)
    assert "waiting: confirm with playbooks/confirm.yml" in proc.stdout

    playbook(bed, "confirm.yml", check=True, instance=vm)
    assert vm not in domains(bed, "hv1") and not exists(bed, "hv1", IMG % vm)
    assert dominfo(bed, dest, vm)["state"] == "running"
    assert record(bed, dest, vm)["status"] == "confirmed"
    assert migrations_dir(bed, dest) == set()

    # A second confirm has nothing to do and says so; a second resize to the same flavor is a no-op.
    again = playbook(bed, "resize.yml", instance=vm, flavor="m1.small")
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert all(c["changed"] == 0 for c in recap(again).values())


def test_shut_off_vm_stays_off_and_revert_restores_identical_disks(bed, guest):
    vm = guest("it-revert", start=False, vcpus=1, memory_mb=128, disk_gb=1)
    src_sum = sha256(bed, "hv1", IMG % vm)

    playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.medium", target_host="hv3")
    assert where(bed, vm) == {"hv1": "shut off", "hv3": "shut off"}
    assert dominfo(bed, "hv3", vm)["vcpus"] == 3
    assert image(bed, "hv3", IMG % vm)["virtual-size"] == 3 * GIB
    assert sha256(bed, "hv1", IMG % vm) == src_sum

    playbook(bed, "revert.yml", check=True, instance=vm)
    assert where(bed, vm) == {"hv1": "shut off"}
    assert dominfo(bed, "hv1", vm)["vcpus"] == 1
    assert sha256(bed, "hv1", IMG % vm) == src_sum
    assert record(bed, "hv1", vm)["status"] == "reverted"
    nothing_left_on(bed, "hv3", vm)


def test_revert_of_running_vm_boots_the_original(bed, guest):
    vm = guest("it-revert-run", vcpus=1, memory_mb=128, disk_gb=1)
    playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small", target_host="hv2")
    assert report(bed, vm, "hv2")["boot_count"] == "2"
    playbook(bed, "revert.yml", check=True, instance=vm)
    assert where(bed, vm) == {"hv1": "running"}
    got = report(bed, vm, "hv1")
    # The original disk (counter was 1) booted again, not the copy (which had reached 2).
    assert (got["nproc"], got["disk_bytes"], got["boot_count"]) == ("1", str(GIB), "2")
    nothing_left_on(bed, "hv2", vm)


STEP_TASKS = {
    "claim": "Claim resources and open the migration record",
    "precopy": "Power off on the source and copy",
    "shutdown": "Power off on the source and copy",
    "copy": "Power off on the source and copy",
    "grow": "Grow the disks, define",
    "define": "Grow the disks, define",
    "start": "Grow the disks, define",
}


def _rolled_back(bed, vm, proc, task, dest="hv2", touched=True):
    """touched: the failure came after the source record was written (so after the checks that
    run before the power-off); otherwise the VM must not have been touched at all."""
    assert proc.returncode != 0
    assert 'failed at "%s' % task in proc.stdout
    rec = record(bed, "hv1", vm)
    if not touched:
        assert "The VM was not touched; what was prepared on %s was removed." % dest in proc.stdout
        assert rec is None  # the source was never touched
    else:
        assert "Rolled back: the VM is on hv1 with its original size and disks" in proc.stdout
        assert rec["status"] == "error" and rec["rolled_back"] is True
        assert "rollback after failure in: %s" % task in rec["history"][-2]["note"]
    nothing_left_on(bed, dest, vm)


@pytest.mark.parametrize("step", sorted(STEP_TASKS))
def test_failure_at_each_step_rolls_back_a_running_vm(bed, guest, step):
    vm = guest("it-fail-" + step, vcpus=1, memory_mb=128, disk_gb=1)
    proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small", target_host="hv2", resize_test_fail_at=step)
    _rolled_back(bed, vm, proc, STEP_TASKS[step], touched=step != "claim")
    assert where(bed, vm) == {"hv1": "running"}
    got = report(bed, vm, "hv1")
    # Original size; the original disk (its counter was 1) booted again unless it was never stopped
    # (a failure before the power-off: the claim, or during the copy while the VM runs).
    assert (got["nproc"], got["disk_bytes"]) == ("1", str(GIB))
    assert got["boot_count"] == ("1" if step in ("claim", "precopy") else "2")
    # No pre-copy delta left beside the disk, and the definition reads the disk itself again.
    assert sh(bed, "hv1", "ls /var/lib/libvirt/images/ | grep '^%s.*hvresize' || true" % vm).strip() == ""
    assert "backingStore type" not in sh(bed, "hv1", "virsh -q -c qemu:///system dumpxml --inactive %s" % vm)
    # The rolled-back record does not block the next resize.
    playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small", target_host="hv2")
    assert dominfo(bed, "hv2", vm)["vcpus"] == 2


@pytest.mark.parametrize("step", ["copy", "start"])
def test_failure_keeps_a_shut_off_vm_off_with_identical_disks(bed, guest, step):
    vm = guest("it-failoff-" + step, start=False, vcpus=1, memory_mb=128, disk_gb=1)
    before = sha256(bed, "hv1", IMG % vm)
    proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small", target_host="hv2", resize_test_fail_at=step)
    _rolled_back(bed, vm, proc, STEP_TASKS[step])
    assert where(bed, vm) == {"hv1": "shut off"}
    assert sha256(bed, "hv1", IMG % vm) == before


@pytest.mark.parametrize("inject,extra,task,touched", [
    # A broken ssh path is found by the check before the power-off: the VM keeps running untouched.
    ("cipher", {"resize_ssh_cipher": "no-such-cipher"}, "Power off on the source and copy", False),
    ("template", {"resize_domain_template": "{{ playbook_dir }}/../tests/integration/files/broken-domain.xml.j2"},
     "Grow the disks, define", True),
])
def test_real_failures_roll_back(bed, guest, inject, extra, task, touched):
    vm = guest("it-real-" + inject, vcpus=1, memory_mb=128, disk_gb=1)
    proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small", target_host="hv2", **extra)
    _rolled_back(bed, vm, proc, task, touched=touched)
    assert where(bed, vm) == {"hv1": "running"}
    got = report(bed, vm, "hv1")
    assert (got["nproc"], got["boot_count"]) == ("1", "2" if touched else "1")


def test_stale_file_on_the_destination_is_refused_and_kept(bed, guest):
    vm = guest("it-stale", vcpus=1, memory_mb=128, disk_gb=1)
    bed.ssh("hv2", "echo precious > %s" % (IMG % vm))
    try:
        proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small", target_host="hv2")
        assert proc.returncode != 0
        assert "already exist on hv2, and their directory is not storage shared with this host; " \
               "they would be overwritten" in proc.stdout
        assert "The VM was not touched" in proc.stdout
        assert report(bed, vm, "hv1")["boot_count"] == "1", "refused before the power-off"
        assert sh(bed, "hv2", "cat %s" % (IMG % vm)).strip() == "precious"
        assert where(bed, vm) == {"hv1": "running"} and record(bed, "hv1", vm) is None
        assert migrations_dir(bed, "hv2") == set() and transfer_keys(bed, "hv2") == 0
    finally:
        bed.ssh("hv2", "rm -f %s" % (IMG % vm))


def _unchanged(bed, vm):
    assert where(bed, vm) == {"hv1": "running"}
    assert dominfo(bed, "hv1", vm)["vcpus"] == 1
    for h in HOSTS:
        assert migrations_dir(bed, h) == set() and transfer_keys(bed, h) == 0


@pytest.mark.parametrize("extra,message", [
    ({"flavor": "m1.huge"}, "unknown flavor 'm1.huge'"),
    ({"flavor": "m1.tiny", "instance": "it-nope"}, "VM it-nope is not defined on any hypervisor"),
    ({"flavor": "m1.small", "instance": "../etc/x"}, "is not a plain domain name"),
    ({"flavor": "m1.small", "target_host": "hv9"}, "target host hv9 is not among the hypervisors"),
    ({"flavor": "m1.small", "target_host": "hv1"}, "target host hv1 cannot take VM it-refuse: is the source host"),
])
def test_bad_requests_are_refused_and_change_nothing(bed, guest, extra, message):
    vm = guest("it-refuse", vcpus=1, memory_mb=128, disk_gb=1)
    args = dict({"instance": vm}, **extra)
    proc = playbook(bed, "resize.yml", **args)
    assert proc.returncode != 0
    assert message in proc.stdout.replace("\n", " ")
    _unchanged(bed, vm)


def test_root_disk_shrink_is_refused_up_front(bed, guest):
    vm = guest("it-shrink", vcpus=1, memory_mb=128, disk_gb=2)
    proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.tiny")
    assert proc.returncode != 0 and "would shrink the root disk from 2 GiB to 1 GiB" in proc.stdout
    _unchanged(bed, vm)


def test_missing_extra_vars_say_what_to_pass(bed):
    proc = playbook(bed, "resize.yml", flavor="m1.small")
    assert proc.returncode != 0 and "-e instance=NAME -e flavor=FLAVOR" in proc.stdout


def test_check_mode_changes_nothing_and_shows_the_plan_and_the_xml_diff(bed, guest):
    vm = guest("it-check", vcpus=1, memory_mb=128, disk_gb=1)
    proc = playbook(bed, "resize.yml", "--check", "--diff", instance=vm, flavor="m1.small", target_host="hv3",
                    resize_max_vcpus=0)  # the vCPU ceiling would depend on this machine's CPUs
    assert proc.returncode == 0, proc.stdout[-3000:]
    out = proc.stdout
    assert "VM %s: hv1 -> hv3, flavor m1.small" % vm in out
    assert "rejected: hv1: is the source host" in out
    assert '-  <vcpu placement="static">1</vcpu>' in out and '+  <vcpu placement="static">2</vcpu>' in out
    # The flavor's memory is the balloon's target; <memory> above it is the hot-plug ceiling.
    assert '+  <currentMemory unit="MiB">256</currentMemory>' in out and '+  <memory unit="MiB">384</memory>' in out
    assert "path_content" not in out  # no noise from the controller's temporary key directory
    _unchanged(bed, vm)
    assert report(bed, vm, "hv1")["boot_count"] == "1"


def test_auto_confirm_confirms_only_resizes_older_than_the_window(bed, guest):
    vm = guest("it-auto", vcpus=1, memory_mb=128, disk_gb=1)
    playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small", target_host="hv2")

    waiting = playbook(bed, "auto_confirm.yml", check=True, window=3600)
    assert "0 resize(s) waiting longer than 3600s" in waiting.stdout
    assert where(bed, vm) == {"hv1": "shut off", "hv2": "running"}

    due = playbook(bed, "auto_confirm.yml", check=True, window=0)
    assert "1 resize(s) waiting longer than 0s: %s" % vm in due.stdout.replace("\n", " ")
    assert where(bed, vm) == {"hv2": "running"}
    assert not exists(bed, "hv1", IMG % vm)
    assert record(bed, "hv2", vm)["status"] == "confirmed"
    assert migrations_dir(bed, "hv2") == set()


def test_paused_vm_is_refused_up_front(bed, guest):
    vm = guest("it-paused", vcpus=1, memory_mb=128, disk_gb=1)
    bed.ssh("hv1", "virsh -c qemu:///system suspend %s" % vm)
    proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small")
    assert proc.returncode != 0 and "the VM is paused; only a running or shut-off VM can be resized" in proc.stdout
    assert where(bed, vm) == {"hv1": "paused"}
    for h in HOSTS:
        assert migrations_dir(bed, h) == set() and transfer_keys(bed, h) == 0


def test_two_resizes_competing_for_room_for_one(bed, guest, tmp_path):
    """Both name hv3, which has room for one m1.small: exactly one gets it, the other changes nothing."""
    import shutil

    from resize_lib import host_facts, start_playbook

    a = guest("it-race-a", vcpus=1, memory_mb=128, disk_gb=1)
    b = guest("it-race-b", vcpus=1, memory_mb=128, disk_gb=1)
    hv3 = host_facts(bed, "hv3")
    free = hv3["memory_mb"] - hv3["allocated_memory_mb"] - hv3["claimed_memory_mb"]
    # An inventory where hv3 keeps all but 300 MiB for itself: one 256 MiB VM fits, two do not.
    inv = tmp_path / "inventory"
    shutil.copytree(os.path.dirname(bed.inventory), inv)
    (inv / "host_vars").mkdir()
    (inv / "host_vars" / "hv3.yml").write_text("hypervisor_reserved_host_memory_mb: %d\n" % (free - 300))
    assert host_facts(bed, "hv3", str(inv / "inventory.yml"))["memory_mb"] == hv3["memory_mb"]

    procs = {vm: start_playbook(bed, "resize.yml", str(inv / "inventory.yml"), instance=vm, flavor="m1.small",
                                target_host="hv3") for vm in (a, b)}
    outs = {vm: p.communicate(timeout=600)[0] for vm, p in procs.items()}
    rcs = {vm: p.returncode for vm, p in procs.items()}
    winners = [vm for vm in rcs if rcs[vm] == 0]
    assert len(winners) == 1, "exactly one resize may win: %s\n%s" % (rcs, "\n".join(o[-2000:] for o in outs.values()))
    loser = b if winners == [a] else a
    assert "RAM: needs 256 MiB" in outs[loser]
    assert where(bed, winners[0]) == {"hv1": "shut off", "hv3": "running"}
    assert where(bed, loser) == {"hv1": "running"}
    assert dominfo(bed, "hv1", loser)["vcpus"] == 1
    assert len(migrations_dir(bed, "hv3")) == 1  # the winner's claim, held until confirm


def test_no_valid_host_names_every_host_and_its_reason(bed, guest):
    vm = guest("it-nohost", start=False, vcpus=1, memory_mb=128, disk_gb=1)
    bed.ssh("hv1", "ip link add vmbr9 type bridge 2>/dev/null || true; ip link set vmbr9 up")
    try:
        bed.ssh("hv1", "virsh -q -c qemu:///system attach-interface %s bridge vmbr9 --model virtio --config" % vm)
        proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small")
        out = proc.stdout.replace("\n", " ")
        assert proc.returncode != 0
        assert "no valid host for VM %s (2 vCPU, 256 MiB)" % vm in out
        assert "hv1: is the source host; hv2: bridge vmbr9 missing; hv3: bridge vmbr9 missing" in out
        assert where(bed, vm) == {"hv1": "shut off"}
        for h in HOSTS:
            assert migrations_dir(bed, h) == set()
    finally:
        bed.ssh("hv1", "ip link del vmbr9", check=False)


def test_missing_storage_path_on_the_destination_is_refused(bed, guest):
    vm = guest("it-store", start=False, vcpus=1, memory_mb=128, disk_gb=1)
    data = "/var/lib/libvirt/images/only-hv1/%s-data.qcow2" % vm
    try:
        bed.ssh("hv1", "mkdir -p /var/lib/libvirt/images/only-hv1 && qemu-img create -q -f qcow2 %s 64M && "
                       "virsh -q -c qemu:///system attach-disk %s %s vdb --driver qemu --subdriver qcow2 --config"
                       % (data, vm, data))
        proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small", target_host="hv2")
        assert proc.returncode != 0
        said = " ".join(proc.stdout.split()).replace("''", "'")
        assert ("disk %s needs the directory /var/lib/libvirt/images/only-hv1, which does not exist on the "
                "destination [rule P1, docs/security.md]" % data) in said
        assert where(bed, vm) == {"hv1": "shut off"} and record(bed, "hv1", vm) is None
        assert migrations_dir(bed, "hv2") == set() and transfer_keys(bed, "hv2") == 0
    finally:
        bed.ssh("hv1", "rm -rf /var/lib/libvirt/images/only-hv1", check=False)


def test_extra_sparse_data_disk_travels_identical_and_sparse(bed, guest):
    vm = guest("it-extra", start=False, vcpus=1, memory_mb=128, disk_gb=1)
    data = "/var/lib/libvirt/images/%s-data.raw" % vm
    try:
        bed.ssh("hv1", "truncate -s 256M %s && dd if=/dev/urandom of=%s bs=1M count=4 seek=100 conv=notrunc "
                       "status=none && virsh -q -c qemu:///system attach-disk %s %s vdb --driver qemu "
                       "--subdriver raw --config" % (data, data, vm, data))
        before = sha256(bed, "hv1", data)
        playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small", target_host="hv3")
        assert sha256(bed, "hv3", data) == before
        size, blocks = sh(bed, "hv3", "stat -c '%%s %%b' %s" % data).split()
        assert int(size) == 256 * 1024 * 1024
        assert int(blocks) * 512 < 8 * 1024 * 1024, "holes must stay holes on the destination"
        assert "vdb" in sh(bed, "hv3", "virsh -c qemu:///system domblklist %s" % vm)
        assert image(bed, "hv3", data)["virtual-size"] == 256 * 1024 * 1024  # only the root disk grows
    finally:
        for h in HOSTS:
            bed.ssh(h, "rm -f %s" % data, check=False)


BACKUP = IMG + ".hvresize-backup"


def test_same_host_resize_in_place_then_confirm(bed, guest):
    vm = guest("it-same", vcpus=1, memory_mb=128, disk_gb=1)
    src_sum = sha256(bed, "hv1", IMG % vm)
    playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small", target_host="hv1", allow_same_host="true")
    assert where(bed, vm) == {"hv1": "running"}
    assert dominfo(bed, "hv1", vm)["vcpus"] == 2
    got = report(bed, vm, "hv1")
    assert (got["nproc"], got["disk_bytes"], got["boot_count"]) == ("2", str(2 * GIB), "2")
    assert sha256(bed, "hv1", BACKUP % vm) == src_sum  # the backup is the disk as it was
    assert record(bed, "hv1", vm)["status"] == "finished"

    playbook(bed, "confirm.yml", check=True, instance=vm)
    assert not exists(bed, "hv1", BACKUP % vm)
    assert where(bed, vm) == {"hv1": "running"} and dominfo(bed, "hv1", vm)["vcpus"] == 2
    assert record(bed, "hv1", vm)["status"] == "confirmed"
    assert migrations_dir(bed, "hv1") == set()


def test_same_host_revert_restores_identical_disks_and_definition(bed, guest):
    vm = guest("it-same-rev", start=False, vcpus=1, memory_mb=128, disk_gb=1)
    src_sum = sha256(bed, "hv1", IMG % vm)
    playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.medium", target_host="hv1",
             allow_same_host="true")
    assert dominfo(bed, "hv1", vm)["vcpus"] == 3 and image(bed, "hv1", IMG % vm)["virtual-size"] == 3 * GIB
    assert where(bed, vm) == {"hv1": "shut off"}

    playbook(bed, "revert.yml", check=True, instance=vm)
    assert where(bed, vm) == {"hv1": "shut off"}
    assert dominfo(bed, "hv1", vm) == {"vcpus": 1, "memory_kib": 131072, "state": "shut off"}
    assert sha256(bed, "hv1", IMG % vm) == src_sum
    assert not exists(bed, "hv1", BACKUP % vm)
    assert record(bed, "hv1", vm)["status"] == "reverted"
    assert migrations_dir(bed, "hv1") == set()


@pytest.mark.parametrize("step", ["copy", "grow", "start"])
def test_same_host_failure_rolls_back_in_place(bed, guest, step):
    vm = guest("it-same-fail-" + step, vcpus=1, memory_mb=128, disk_gb=1)
    proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small", target_host="hv1", allow_same_host="true",
                    resize_test_fail_at=step)
    assert proc.returncode != 0 and "Rolled back: the VM is on hv1 with its original size and disks" in proc.stdout
    assert where(bed, vm) == {"hv1": "running"}
    assert image(bed, "hv1", IMG % vm)["virtual-size"] == GIB
    got = report(bed, vm, "hv1")
    assert (got["nproc"], got["disk_bytes"], got["boot_count"]) == ("1", str(GIB), "2")
    rec = record(bed, "hv1", vm)
    assert rec["status"] == "error" and rec["rolled_back"] is True
    assert not exists(bed, "hv1", BACKUP % vm) and migrations_dir(bed, "hv1") == set()


EPH_FLAVORS = {
    "e.small": {"vcpus": 1, "memory_mb": 128, "root_gb": 1, "ephemeral_gb": 1, "swap_mb": 64},
    "e.large": {"vcpus": 2, "memory_mb": 256, "root_gb": 2, "ephemeral_gb": 2, "swap_mb": 128},
    "e.none": {"vcpus": 2, "memory_mb": 256, "root_gb": 2, "ephemeral_gb": 0, "swap_mb": 128},
}


def _with_ephemeral_and_swap(bed, vm):
    eph = "/var/lib/libvirt/images/%s-ephemeral.raw" % vm
    swap = "/var/lib/libvirt/images/%s-swap.raw" % vm
    bed.ssh("hv1", "truncate -s 1G %s && dd if=/dev/urandom of=%s bs=1M count=2 seek=500 conv=notrunc status=none && "
                   "truncate -s 64M %s && dd if=/dev/urandom of=%s bs=1M count=1 conv=notrunc status=none && "
                   "virsh -q -c qemu:///system attach-disk %s %s vdb --driver qemu --subdriver raw --config && "
                   "virsh -q -c qemu:///system attach-disk %s %s vdc --driver qemu --subdriver raw --config"
                   % (eph, eph, swap, swap, vm, eph, vm, swap))
    return eph, swap


def test_ephemeral_grown_with_its_data_and_swap_recreated(bed, guest):
    vm = guest("it-eph", start=False, vcpus=1, memory_mb=128, disk_gb=1)
    eph, swap = _with_ephemeral_and_swap(bed, vm)
    try:
        eph_sum = sha256(bed, "hv1", eph)
        playbook(bed, "resize.yml", check=True, instance=vm, flavor="e.large", target_host="hv2",
                 resize_flavors=EPH_FLAVORS)
        assert image(bed, "hv2", eph)["virtual-size"] == 2 * GIB
        # The grown ephemeral disk keeps its data: its first GiB is the original disk, byte for byte.
        assert sh(bed, "hv2", "head -c %d %s | sha256sum" % (GIB, eph)).split()[0] == eph_sum
        assert image(bed, "hv2", swap)["virtual-size"] == 128 * 1024 * 1024
        # Recreated blank: all zeros where the old swap had 1 MiB of random data, nearly nothing allocated.
        assert bed.ssh("hv2", "cmp -s -n %d %s /dev/zero" % (128 * 1024 * 1024, swap), check=False).returncode == 0
        assert int(sh(bed, "hv2", "stat -c %%b %s" % swap)) * 512 < 1024 * 1024
        assert dominfo(bed, "hv2", vm)["vcpus"] == 2
        assert image(bed, "hv1", eph)["virtual-size"] == GIB and sha256(bed, "hv1", eph) == eph_sum  # backup untouched
    finally:
        for h in HOSTS:
            bed.ssh(h, "rm -f %s %s" % (eph, swap), check=False)


def test_ephemeral_shrink_is_refused_up_front(bed, guest):
    vm = guest("it-eph-shrink", start=False, vcpus=1, memory_mb=128, disk_gb=1)
    eph, swap = _with_ephemeral_and_swap(bed, vm)
    try:
        proc = playbook(bed, "resize.yml", instance=vm, flavor="e.none", resize_flavors=EPH_FLAVORS)
        assert proc.returncode != 0
        assert "would shrink the ephemeral disk from 1 GiB to 0 GiB" in proc.stdout
        assert where(bed, vm) == {"hv1": "shut off"} and record(bed, "hv1", vm) is None
        for h in HOSTS:
            assert migrations_dir(bed, h) == set()
    finally:
        for h in HOSTS:
            bed.ssh(h, "rm -f %s %s" % (eph, swap), check=False)


def test_move_to_a_root_gb_zero_flavor_is_refused(bed, guest):
    vm = guest("it-zero", vcpus=1, memory_mb=128, disk_gb=1)
    proc = playbook(bed, "resize.yml", instance=vm, flavor="z.zero",
                    resize_flavors={"z.zero": {"vcpus": 2, "memory_mb": 256, "root_gb": 0}})
    assert proc.returncode != 0 and "has root_gb=0" in proc.stdout and "is refused" in proc.stdout
    _unchanged(bed, vm)


def test_vm_defined_on_two_hosts_is_refused(bed, guest):
    vm = guest("it-twice", vcpus=1, memory_mb=128, disk_gb=1)
    xml = sh(bed, "hv1", "virsh -c qemu:///system dumpxml --inactive %s" % vm)
    bed.ssh("hv3", "cat > /tmp/%s.xml <<'EOF'\n%s\nEOF\nvirsh -q -c qemu:///system define /tmp/%s.xml" % (vm, xml, vm))
    try:
        proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small")
        assert proc.returncode != 0 and "VM %s is defined on more than one hypervisor: hv1, hv3" % vm in proc.stdout
        assert where(bed, vm) == {"hv1": "running", "hv3": "shut off"}
        for h in HOSTS:
            assert migrations_dir(bed, h) == set()
    finally:
        bed.ssh("hv3", "virsh -q -c qemu:///system undefine %s" % vm, check=False)


def test_second_resize_while_one_waits_for_confirm_is_refused(bed, guest):
    vm = guest("it-open", vcpus=1, memory_mb=128, disk_gb=1)
    playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small", target_host="hv2")
    proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.medium")
    out = proc.stdout.replace("\n", " ")
    assert proc.returncode != 0 and "VM %s is in the middle of a resize" % vm in out
    assert "confirm or revert it first" in out
    assert where(bed, vm) == {"hv1": "shut off", "hv2": "running"} and dominfo(bed, "hv2", vm)["vcpus"] == 2
    assert record(bed, "hv2", vm)["status"] == "finished"


def test_host_in_maintenance_is_never_chosen(bed, guest, tmp_path):
    import shutil

    vm = guest("it-maint", vcpus=1, memory_mb=128, disk_gb=1)
    inv = tmp_path / "inventory"
    shutil.copytree(os.path.dirname(bed.inventory), inv)
    (inv / "host_vars").mkdir()
    (inv / "host_vars" / "hv2.yml").write_text("hypervisor_maintenance: true\n")
    proc = playbook(bed, "resize.yml", "-i", str(inv / "inventory.yml"), check=True, instance=vm, flavor="m1.small")
    assert "hv2: in maintenance (hypervisor_maintenance is set)" in proc.stdout
    assert where(bed, vm) == {"hv1": "shut off", "hv3": "running"}


def test_migrate_moves_at_the_same_size_then_revert_brings_it_back(bed, guest):
    vm = guest("it-migrate", vcpus=1, memory_mb=128, disk_gb=1)
    src_sum = sha256(bed, "hv1", IMG % vm)
    before = dominfo(bed, "hv1", vm)
    # Its own host is never a migration's destination, even when asked for.
    out = playbook(bed, "migrate.yml", instance=vm, target_host="hv1")
    assert out.returncode != 0 and "target host hv1 cannot take VM %s: is the source host" % vm in out.stdout
    assert where(bed, vm) == {"hv1": "running"}

    proc = playbook(bed, "migrate.yml", check=True, instance=vm, target_host="hv3")
    assert "path: cold (the VM is shut down, moved and started): a migration moves the VM" in proc.stdout
    assert where(bed, vm) == {"hv1": "shut off", "hv3": "running"}
    assert dominfo(bed, "hv3", vm) == before  # same vCPUs, memory, running
    assert image(bed, "hv3", IMG % vm)["virtual-size"] == GIB
    got = report(bed, vm, "hv3")
    assert (got["nproc"], got["disk_bytes"], got["boot_count"]) == ("1", str(GIB), "2")
    assert sha256(bed, "hv1", IMG % vm) == src_sum  # the source keeps its disk as it was
    assert record(bed, "hv3", vm)["status"] == "finished"

    playbook(bed, "revert.yml", check=True, instance=vm)
    assert where(bed, vm) == {"hv1": "running"}
    assert dominfo(bed, "hv1", vm) == before
    # The original disk booted again (the copy's boot on hv3 is not in it).
    assert report(bed, vm, "hv1")["boot_count"] == "2"
    nothing_left_on(bed, "hv3", vm)
