"""The copy engine on the real bed: shared storage detected and the copy skipped, progress shown
while a copy runs, the bandwidth limit and compression options.

hv1 and hv2 share /var/lib/libvirt/shared (one directory mounted on both); hv3 does not.
"""

import re

from resize_lib import (
    GIB,
    HOSTS,
    domains,
    dominfo,
    exists,
    image,
    migrations_dir,
    playbook,
    record,
    report,
    sh,
    sha256,
    transfer_keys,
    where,
)

SHARED = "/var/lib/libvirt/shared/%s.qcow2"
MIB = 1024 * 1024


def shared_leftovers(bed, vm):
    """Files of ours in the shared directory besides the disk itself: backups, parts, markers."""
    out = sh(bed, "hv1", "ls -A /var/lib/libvirt/shared/")
    return sorted(f for f in out.split() if f.startswith(".hvresize-") or (f.startswith(vm) and ".hvresize" in f))


def test_shared_storage_skips_the_copy_then_confirm(bed, guest):
    vm = guest("it-shared", vcpus=1, memory_mb=128, disk_gb=1, storage="shared")
    playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small", target_host="hv2")

    # Running on hv2 at the new size, on the very same disk file (its boot counter went on).
    assert dominfo(bed, "hv2", vm) == {"vcpus": 2, "memory_kib": 262144, "state": "running"}
    got = report(bed, vm, "hv2")
    assert (got["nproc"], got["disk_bytes"], got["boot_count"]) == ("2", str(2 * GIB), "2")
    assert image(bed, "hv1", SHARED % vm)["virtual-size"] == 2 * GIB, "hv1 sees the grown disk: one file"
    # Nothing crossed the wire: no local copy on hv2, and the records say shared.
    assert sh(bed, "hv2", "ls /var/lib/libvirt/images/ | grep '^%s' || true" % vm).strip() == ""
    src = record(bed, "hv1", vm)
    assert src["status"] == "post-migrating"
    assert [(d["path"], d["shared"], d["wire_bytes"]) for d in src["disks"]] == [(SHARED % vm, True, 0)]
    assert "1 on shared storage" in " ".join(h["note"] for h in record(bed, "hv2", vm)["history"])
    # The backup, taken while the VM was off, waits beside the disk; the markers are gone.
    assert shared_leftovers(bed, vm) == [vm + ".qcow2.hvresize-backup"]

    playbook(bed, "confirm.yml", check=True, instance=vm)
    assert vm not in domains(bed, "hv1")
    assert exists(bed, "hv2", SHARED % vm), "confirm must not delete the disk the destination now uses"
    assert shared_leftovers(bed, vm) == []
    assert dominfo(bed, "hv2", vm)["state"] == "running"
    assert record(bed, "hv2", vm)["status"] == "confirmed"
    assert all(migrations_dir(bed, h) == set() and transfer_keys(bed, h) == 0 for h in HOSTS)


def test_shared_storage_revert_restores_the_identical_disk(bed, guest):
    vm = guest("it-shared-rv", start=False, vcpus=1, memory_mb=128, disk_gb=1, storage="shared")
    before = sha256(bed, "hv1", SHARED % vm)
    playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small", target_host="hv2")
    assert image(bed, "hv2", SHARED % vm)["virtual-size"] == 2 * GIB
    assert sha256(bed, "hv1", SHARED % vm) != before, "the destination grew the shared disk"

    playbook(bed, "revert.yml", check=True, instance=vm)
    assert where(bed, vm) == {"hv1": "shut off"}
    assert sha256(bed, "hv1", SHARED % vm) == before
    assert image(bed, "hv1", SHARED % vm)["virtual-size"] == GIB
    assert shared_leftovers(bed, vm) == []
    assert all(migrations_dir(bed, h) == set() and transfer_keys(bed, h) == 0 for h in HOSTS)


def test_shared_storage_rollback_after_the_disk_was_grown(bed, guest):
    vm = guest("it-shared-rb", vcpus=1, memory_mb=128, disk_gb=1, storage="shared")
    proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small", target_host="hv2",
                    resize_test_fail_at="start")
    assert proc.returncode != 0
    assert "Rolled back: the VM is on hv1 with its original size and disks" in proc.stdout
    assert where(bed, vm) == {"hv1": "running"}
    got = report(bed, vm, "hv1")
    assert (got["nproc"], got["disk_bytes"], got["boot_count"]) == ("1", str(GIB), "2")
    assert shared_leftovers(bed, vm) == []
    assert all(migrations_dir(bed, h) == set() and transfer_keys(bed, h) == 0 for h in HOSTS)


PROGRESS = re.compile(r"^\[hv1\] copying disk 1/1 (\S+): ([\d.]+ \w+) of ([\d.]+ \w+) \(([\d.]+)%\), "
                      r"([\d.]+ \w+)/s, ETA (\S+)$", re.M)


def test_progress_bandwidth_limit_and_compression_on_a_raw_disk(bed, guest):
    vm = guest("it-progress", start=False, vcpus=1, memory_mb=128, disk_gb=2, format="raw")
    disk = "/var/lib/libvirt/images/%s.raw" % vm
    # 160 MiB of data (random, then a compressible text run) in a 2 GiB sparse raw disk.
    sh(bed, "hv1", "dd if=/dev/urandom of=%s bs=1M seek=64 count=96 conv=notrunc status=none && "
                   "yes hypervisor-resize | head -c %d | dd of=%s bs=1M seek=512 conv=notrunc status=none"
                   % (disk, 64 * MIB, disk))
    before = sha256(bed, "hv1", disk)
    proc = playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small", target_host="hv2",
                    resize_bandwidth_limit=40, resize_compress=True, resize_progress_interval=1)

    lines = PROGRESS.findall(proc.stdout)   # (path, done, total, percent, rate, eta)
    assert len(lines) >= 2, "progress lines while the copy ran:\n" + proc.stdout
    assert {line[0] for line in lines} == {disk}
    assert {line[2] for line in lines} == {"160.0 MiB"}
    percents = [float(line[3]) for line in lines]
    assert percents == sorted(percents) and any(0 < p < 100 for p in percents)
    # What arrived is what was sent, sparse, and the source disk is untouched.
    assert sha256(bed, "hv2", disk) == before == sha256(bed, "hv1", disk)
    assert int(sh(bed, "hv2", "stat -c %%b %s" % disk)) * 512 < 200 * MIB, "holes stay holes"
    copied = record(bed, "hv1", vm)["disks"][0]
    assert copied["compressed"] is True and copied["bytes"] == 160 * MIB
    # The limit is an average over the copy: it cannot have gone faster than 40 MiB/s.
    assert copied["seconds"] >= copied["wire_bytes"] / (40.0 * MIB) - 0.05
    assert sh(bed, "hv1", "ls -A /var/lib/libvirt/hvresize/progress/ 2>/dev/null || true").strip() == "", \
        "the progress file is removed when the copy ends"
    playbook(bed, "confirm.yml", check=True, instance=vm)


def test_bad_bandwidth_limit_is_refused_before_anything_changes(bed, guest):
    vm = guest("it-badlimit", vcpus=1, memory_mb=128, disk_gb=1)
    proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small", target_host="hv2",
                    resize_bandwidth_limit=-5)
    assert proc.returncode != 0
    assert "bandwidth_limit must be 0 (no limit) or a positive number of MiB/s, got -5" in proc.stdout
    assert where(bed, vm) == {"hv1": "running"} and record(bed, "hv1", vm) is None
    assert report(bed, vm, "hv1")["boot_count"] == "1"
    assert all(migrations_dir(bed, h) == set() and transfer_keys(bed, h) == 0 for h in HOSTS)


def test_marker_files_are_never_left_after_a_normal_copy(bed, guest):
    vm = guest("it-nomarker", vcpus=1, memory_mb=128, disk_gb=1)
    playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small", target_host="hv2", confirm=True)
    rec = record(bed, "hv2", vm)
    assert rec["status"] == "confirmed"
    for h in ("hv1", "hv2"):
        assert sh(bed, h, "ls -A /var/lib/libvirt/images/ | grep -e '%s' -e '^%s.*hvresize' || true"
                  % (rec["id"], vm)).strip() == ""
