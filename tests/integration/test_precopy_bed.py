"""The copy while the VM runs (pre-copy), on the real bed, with a guest that never stops writing
its disk (bed guest --guest-flags writer): the guest itself proves, after the move and after the
revert, that its disk holds its last write before the power-off (HVR-WRITER last=N, read from the
disk at boot, equal to the count the source's delta chain holds)."""

import os
import re
import subprocess

from resize_lib import (
    GIB,
    HOSTS,
    STATE_DIR,
    host_file,
    kill_run_when,
    migrations_dir,
    nothing_left_on,
    playbook,
    record,
    recover,
    report,
    said,
    sh,
    wait_for,
    where,
)

MIB = 1024 * 1024


def writer_guest(guest, bed, name, fmt, data_mib=256):
    """A running writer guest on hv1 with `data_mib` MiB of random data on its 2 GiB disk."""
    vm = guest(name, start=False, vcpus=1, memory_mb=128, disk_gb=2, format=fmt, guest_flags="writer")
    disk = "/var/lib/libvirt/images/%s.%s" % (vm, fmt)
    if fmt == "raw":
        sh(bed, "hv1", "dd if=/dev/urandom of=%s bs=1M seek=1100 count=%d conv=notrunc status=none" % (disk, data_mib))
    else:
        sh(bed, "hv1", "qemu-io -f qcow2 -c 'write -P 0x5a %dM %dM' %s >/dev/null" % (1100, data_mib, disk))
    sh(bed, "hv1", "virsh -q -c qemu:///system start %s" % vm)
    report(bed, vm, "hv1")
    return vm, disk


def writes_seen_at_boot(bed, vm, host):
    """The count of completed writes the guest found on its disk at its last boot."""
    report(bed, vm, host)  # the boot is READY: its HVR-WRITER line came before
    out = sh(bed, host, "grep -a 'HVR-WRITER' /var/log/libvirt/qemu/%s-console.log | tail -n 1" % vm)
    m = re.search(r"HVR-WRITER last=(\d+)", out)
    assert m, "no HVR-WRITER line on %s: %r" % (host, out)
    return int(m.group(1))


def writes_on(bed, host, image, fmt):
    """The count in sector 1 of an image (read through its chain, without the VM)."""
    out = sh(bed, host, "qemu-io -r -U -f %s -c 'read -v 512 16' %s" % (fmt, image))
    m = re.search(r"00000200:((?:\s+[0-9a-f]{2}){16})", out)
    text = bytes(int(b, 16) for b in m.group(1).split()).split(b"\0")[0].decode()
    assert text.startswith("W"), text
    return int(text[1:])


def deltas(bed, host, vm):
    return sh(bed, host, "ls /var/lib/libvirt/images/ | grep '^%s.*hvresize' || true" % vm).split()


def test_a_writing_guest_moves_with_its_last_write_and_revert_gives_it_back(bed, guest):
    vm, disk = writer_guest(guest, bed, "it-pre-raw", "raw")
    proc = playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.medium", target_host="hv2")
    m = re.search(r"while the VM ran: (\d+) bytes in (\d+) round\(s\), after the power-off: (\d+) bytes", said(proc))
    assert m, proc.stdout[-3000:]
    live, rounds, after = int(m.group(1)), int(m.group(2)), int(m.group(3))
    assert live >= 256 * MIB and 1 <= rounds <= 3
    assert after < live / 4, "most data went while the VM ran: %d live, %d after" % (live, after)
    # The source: off, reading its last delta; the disk itself as it was when the pre-copy began.
    src = record(bed, "hv1", vm)
    assert src["status"] == "post-migrating" and len(src["precopy"]["disks"][0]["deltas"]) == rounds
    top = src["precopy"]["disks"][0]["deltas"][-1]
    assert sh(bed, "hv1", "virsh -q -c qemu:///system domblklist %s" % vm).split()[-1] == top
    last = writes_on(bed, "hv1", top, "qcow2")
    # The destination: the new size, no delta left, and the guest found its last write there.
    assert where(bed, vm) == {"hv1": "shut off", "hv2": "running"}
    got = report(bed, vm, "hv2")
    assert (got["nproc"], got["disk_bytes"], got["boot_count"]) == ("3", str(3 * GIB), "2")
    assert writes_seen_at_boot(bed, vm, "hv2") == last > 0
    assert deltas(bed, "hv2", vm) == []
    dest = record(bed, "hv2", vm)
    assert len(dest["committed"]) == rounds

    playbook(bed, "revert.yml", check=True, instance=vm)
    # Back on hv1: the deltas committed into the disk, the original definition, the same last write.
    assert where(bed, vm) == {"hv1": "running"}
    got = report(bed, vm, "hv1")
    assert (got["nproc"], got["disk_bytes"], got["boot_count"]) == ("1", str(2 * GIB), "2")
    assert writes_seen_at_boot(bed, vm, "hv1") == last
    assert deltas(bed, "hv1", vm) == []
    devices = sh(bed, "hv1", "virsh -q -c qemu:///system dumpxml --inactive %s" % vm).split("<devices>")[1]
    assert "<source file='%s'" % disk in devices and "hvresize-delta" not in devices
    assert "backingStore type" not in devices
    nothing_left_on(bed, "hv2", vm)


def test_a_qcow2_guest_moves_then_confirm_deletes_the_source_and_its_deltas(bed, guest):
    vm, disk = writer_guest(guest, bed, "it-pre-q", "qcow2", data_mib=128)
    playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small", target_host="hv3")
    top = record(bed, "hv1", vm)["precopy"]["disks"][0]["deltas"][-1]
    last = writes_on(bed, "hv1", top, "qcow2")
    got = report(bed, vm, "hv3")
    assert (got["nproc"], got["disk_bytes"]) == ("2", str(2 * GIB))
    assert writes_seen_at_boot(bed, vm, "hv3") == last
    info = sh(bed, "hv3", "qemu-img info -U --output=json %s" % disk)
    assert '"format": "qcow2"' in info and "backing" not in info
    playbook(bed, "confirm.yml", check=True, instance=vm)
    assert where(bed, vm) == {"hv3": "running"}
    assert sh(bed, "hv1", "ls /var/lib/libvirt/images/ | grep '^%s' || true" % vm).strip() == ""
    assert all(migrations_dir(bed, h) == set() for h in HOSTS)


def test_precopy_off_copies_everything_after_the_power_off(bed, guest):
    vm, _disk = writer_guest(guest, bed, "it-pre-off", "raw", data_mib=64)
    proc = playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small", target_host="hv2",
                    resize_precopy=False)
    assert "while the VM ran" not in said(proc)
    src = record(bed, "hv1", vm)
    assert "precopy" not in src and deltas(bed, "hv1", vm) == []
    assert sum(d["bytes"] for d in src["disks"]) >= 64 * MIB
    assert writes_seen_at_boot(bed, vm, "hv2") == writes_on(bed, "hv1", "/var/lib/libvirt/images/%s.raw" % vm, "raw")
    playbook(bed, "revert.yml", check=True, instance=vm)
    assert where(bed, vm) == {"hv1": "running"}


def test_a_delta_planted_on_the_destination_refuses_before_the_vm_is_touched(bed, guest):
    vm, disk = writer_guest(guest, bed, "it-pre-plant", "raw", data_mib=16)
    sh(bed, "hv2", "touch %s.hvresize-delta2" % disk)
    try:
        proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small", target_host="hv2")
        assert proc.returncode != 0
        assert "%s.hvresize-delta2 already on this host" % disk in said(proc)
        assert "Nothing was changed" in said(proc) or "The VM was not touched" in said(proc)
        assert record(bed, "hv1", vm) is None and where(bed, vm)["hv1"] == "running"
        assert sh(bed, "hv2", "ls %s/migrations 2>/dev/null || true" % STATE_DIR).strip() == ""
    finally:
        sh(bed, "hv2", "rm -f %s.hvresize-delta2" % disk)


def test_a_run_killed_during_the_precopy_is_rolled_back_while_the_vm_runs(bed, guest):
    vm, disk = writer_guest(guest, bed, "it-pre-kill", "raw", data_mib=256)
    delta = host_file(bed, "hv1", disk + ".hvresize-delta1")
    kill_run_when(bed, vm, lambda: os.path.exists(delta), "the pre-copy's first delta", resize_bandwidth_limit=20)
    # The step on hv1 dies too (as in a crash of the host's ssh session): the VM runs on its delta.
    subprocess.run([bed.script, "exec", "hv1", "pkill", "-9", "-f", "AnsiballZ_virt_power_off_migrate"], check=False)
    wait_for(lambda: subprocess.run([bed.script, "exec", "hv1", "sh", "-c", "pgrep -f '[v]irt_power_off_migrate'"],
                                    check=False, capture_output=True).returncode != 0, 60, "the step on hv1 to end")
    src = record(bed, "hv1", vm)
    assert src["status"] == "migrating" and src["precopy"]["disks"][0]["deltas"][0] == disk + ".hvresize-delta1"
    assert sh(bed, "hv1", "virsh -q -c qemu:///system domblklist %s" % vm).split()[-1] == disk + ".hvresize-delta1"
    proc = recover(bed, vm)
    assert "rolled back migration" in said(proc)
    # The VM never stopped: still its first boot, on its own disk again, no delta left anywhere.
    assert where(bed, vm) == {"hv1": "running"}
    assert report(bed, vm, "hv1")["boot_count"] == "1"
    assert sh(bed, "hv1", "virsh -q -c qemu:///system domblklist %s" % vm).split()[-1] == disk
    devices = sh(bed, "hv1", "virsh -q -c qemu:///system dumpxml --inactive %s" % vm).split("<devices>")[1]
    assert "hvresize-delta" not in devices and "backingStore type" not in devices
    assert deltas(bed, "hv1", vm) == []
    # The killed step's progress file and one-off key: removed by the rollback.
    assert sh(bed, "hv1", "find %s/progress %s/xfer -type f 2>/dev/null || true" % (STATE_DIR, STATE_DIR)).strip() == ""
    nothing_left_on(bed, "hv2", vm)
    assert sh(bed, "hv2", "ls -A /var/lib/libvirt/images/").strip() == ""   # no part file either
    # The guest's writes made while it ran on the delta are in its disk now: a restart finds the last.
    sh(bed, "hv1", "virsh -q -c qemu:///system shutdown %s" % vm)
    wait_for(lambda: where(bed, vm) == {"hv1": "shut off"}, 60, "the guest to power off", interval=0.5)
    last = writes_on(bed, "hv1", disk, "raw")
    sh(bed, "hv1", "virsh -q -c qemu:///system start %s" % vm)
    assert writes_seen_at_boot(bed, vm, "hv1") == last > 0
