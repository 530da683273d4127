# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The copy while the VM runs (docs/architecture.md, "The copy while the VM runs"). Private.

On the source: a disk-only external snapshot puts a qcow2 delta over each moved disk, so that the
disk is stable while it is sent; later rounds put another delta on top and send the one below;
after the power-off only the top delta travels. Revert and rollback commit the deltas back into
the disk and define the original definition again. On the destination: the deltas received are
committed, in order, into the received disk (rule R4 of docs/security.md).
"""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET

from . import _policy, storage
from .errors import ResizeError, ValidationError

DELTA_SUFFIX = ".hvresize-delta"
MAX_ROUNDS = 8
ROOM = 1 << 30  # free bytes a round needs beside the disks (for the guest's writes into its delta)
FORMATS = ("raw", "qcow2")


def delta_path(path, k):
    """The k-th delta over a disk (k from 1), beside it, on either host."""
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_ROUNDS:
        raise ValidationError("delta round %r is not between 1 and %d" % (k, MAX_ROUNDS))
    return "%s%s%d" % (path, DELTA_SUFFIX, k)


def all_delta_paths(path):
    return [delta_path(path, k) for k in range(1, MAX_ROUNDS + 1)]


def eligible(disk, entry=None):
    """A disk this host may pre-copy: a file disk (not a state file) that is sent, not shared."""
    return (disk.get("device") == "disk" and bool(disk.get("target")) and disk.get("format") in FORMATS
            and not (entry or {}).get("shared"))


# ---- the source ------------------------------------------------------------------------------

def snapshot_xml(live_xml, layers):
    """A disk-only snapshot: every disk in `layers` ({target: new delta path}) gets an external
    qcow2 delta; every other disk of the domain none."""
    root = ET.fromstring(live_xml)
    snap = ET.Element("domainsnapshot")
    ET.SubElement(snap, "description").text = "hypervisor.resize pre-copy"
    disks = ET.SubElement(snap, "disks")
    for disk in root.findall("./devices/disk"):
        target = disk.find("target")
        dev = target.get("dev") if target is not None else None
        if not dev:
            continue
        el = ET.SubElement(disks, "disk", name=dev)
        if dev in layers:
            el.set("snapshot", "external")
            ET.SubElement(el, "driver", type="qcow2")
            ET.SubElement(el, "source", file=layers[dev])
        else:
            el.set("snapshot", "no")
    return ET.tostring(snap, encoding="unicode")


def disk_source(xml, target):
    """The file a disk (by target) reads and writes now: the top of its chain."""
    for disk in ET.fromstring(xml).findall("./devices/disk"):
        tgt = disk.find("target")
        if tgt is not None and tgt.get("dev") == target:
            src = disk.find("source")
            return src.get("file") if src is not None else None
    return None


def take_snapshot(dom, libvirt, layers):
    """Put a new delta over each disk in `layers` while the VM runs (atomic: all or none)."""
    flags = (libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
             | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA)
    dom.snapshotCreateXML(snapshot_xml(dom.XMLDesc(0), layers), flags)


def short_of_room(paths, room=None):
    """The first directory of `paths` with less than ROOM bytes free (where the guest's writes would
    go into a delta), or None."""
    for directory in sorted(set(os.path.dirname(p) for p in paths)):
        st = os.statvfs(directory)
        if st.f_bavail * st.f_frsize < (ROOM if room is None else room):
            return directory
    return None


def allocated(path):
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return 0


def next_round(k, rounds, top_bytes, sent_bytes, threshold):
    """Whether to take round k+1 (pure): rounds left, the delta still above the threshold, and
    smaller than what the round before sent (a guest that writes faster than we copy: cut over)."""
    return k < rounds and top_bytes > threshold and top_bytes < sent_bytes


def undo_source_steps(dom, libvirt, rec):
    """What a revert or rollback on the source does about a pre-copy: [(kind, text, arg)], read
    from the domain and the files, changing nothing."""
    pc = rec.get("precopy") or {}
    if not pc or pc.get("undone"):
        return []
    live = bool(dom.isActive())
    xml = dom.XMLDesc(0 if live else libvirt.VIR_DOMAIN_XML_INACTIVE)
    steps, deltas = [], []
    for d in pc.get("disks") or []:
        top = disk_source(xml, d["target"])
        ours = [p for p in d.get("deltas") or [] if p in all_delta_paths(d["path"])]
        if top and top != d["path"]:
            if top not in ours:
                raise ValidationError("disk %s of %s reads %s, which is not this migration's delta of %s; refusing to "
                                      "commit it" % (d["target"], dom.name(), top, d["path"]), domain=dom.name())
            how = " (the VM runs: block commit and pivot)" if live else ""
            steps.append(("commit-live" if live else "commit", "commit %s into %s%s" % (top, d["path"], how),
                          dict(d, top=top)))
        deltas += [p for p in ours if os.path.lexists(p)]
    steps.append(("define", "define the original definition of %s again" % dom.name(), pc.get("original_xml")))
    steps += [("delete", "delete %s" % p, p) for p in deltas]
    return steps


def _wait_job(dom, target, ready, timeout, sleep=time.sleep):
    deadline = time.monotonic() + timeout
    while True:
        info = dom.blockJobInfo(target, 0)
        if ready and info and "ready='yes'" in _mirror_of(dom.XMLDesc(0), target):
            return
        if not ready and not info:
            return
        if time.monotonic() > deadline:
            raise ResizeError("the block job on %s of %s did not %s within %d s"
                              % (target, dom.name(), "become ready" if ready else "end", timeout),
                              domain=dom.name(), hint="see virsh blockjob %s %s" % (dom.name(), target))
        if ready and not info:
            raise ResizeError("the block commit on %s of %s ended before it was ready" % (target, dom.name()),
                              domain=dom.name())
        sleep(0.05)


def _mirror_of(xml, target):
    for disk in ET.fromstring(xml).findall("./devices/disk"):
        tgt = disk.find("target")
        if tgt is not None and tgt.get("dev") == target:
            mirror = disk.find("mirror")
            return "" if mirror is None else ET.tostring(mirror, encoding="unicode").replace('"', "'")
    return ""


def commit_live(dom, libvirt, disk, timeout=3600):
    """Active block commit of the whole chain above the disk into it, then pivot: the running VM
    uses the disk itself again."""
    target = disk["target"]
    if not dom.blockJobInfo(target, 0):  # a killed revert may have started it already
        dom.blockCommit(target, disk["path"], None, 0, libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE)
    _wait_job(dom, target, True, timeout)
    dom.blockJobAbort(target, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
    _wait_job(dom, target, False, 60)
    now = disk_source(dom.XMLDesc(0), target)
    if now != disk["path"]:
        raise ResizeError("after the block commit %s of %s still reads %s" % (target, dom.name(), now),
                          domain=dom.name())


def commit_offline(disk):
    """qemu-img commit of the chain from the top delta down into the disk (the VM is off). The
    chain is this host's own, made by its libvirt; -d keeps the deltas' contents, so that a commit
    stopped half-way can be run again."""
    storage.run(["qemu-img", "commit", "-q", "-d", "-f", "qcow2", "-b", disk["path"], disk["top"]],
                "qemu-img commit %s" % disk["top"])


# ---- the destination -------------------------------------------------------------------------

def deltas_received(path, received):
    """The deltas received for the disk at `path`, in order; R4: exactly delta1..deltaN."""
    got = [k for k in range(1, MAX_ROUNDS + 1) if delta_path(path, k) in received]
    if got != list(range(1, len(got) + 1)):
        raise ValidationError("the deltas received for %s are rounds %s, not 1 to %d in order; refused [rule R4, %s]"
                              % (path, got, len(got), _policy.SECURITY_DOC))
    return [delta_path(path, k) for k in got]


def check_delta(delta, base, base_format):
    """R4 on one delta, read as qcow2 (never probed, its backing never opened): why it may not be
    committed into `base`, or None."""
    problem = storage.image_refs_problem(base, base_format)
    if problem:
        return "would be committed into %s, which %s (R3)" % (base, problem)
    info = storage.image_info(delta, "qcow2")
    if info.get("format") != "qcow2":
        return "is not a qcow2 image"
    if info.get("data_file"):
        return "names an external data file (%s)" % info["data_file"]
    size = storage.image_info(base, base_format)["virtual_size"]
    if info.get("virtual_size") != size:
        return "has a virtual size of %s bytes, not the disk's %d" % (info.get("virtual_size"), size)
    return None


def commit_delta(delta, base, base_format):
    """Point the delta at this host's own disk (whatever S wrote there is never opened), then commit
    it into the disk."""
    storage.run(["qemu-img", "rebase", "-q", "-u", "-f", "qcow2", "-b", base, "-F", base_format, delta],
                "qemu-img rebase %s" % delta)
    storage.run(["qemu-img", "commit", "-q", "-d", "-f", "qcow2", "-b", base, delta], "qemu-img commit %s" % delta)


def commit_received(disks, received, committed, note, name=None, host=None):
    """Commit every disk's received deltas into it, in order (R4). `disks`: [(path, format)] of the
    disks received whole; `committed`: paths already committed and deleted (a finish run again);
    `note(path)` records one before it is deleted. Returns what was done."""
    done = []
    for path, fmt in disks:
        for delta in deltas_received(path, received):
            if delta in committed and not os.path.lexists(delta):
                continue
            if not os.path.lexists(delta):
                raise ValidationError("delta %s was received but is gone, and not committed into %s"
                                      % (delta, path), domain=name, host=host, hint="revert the resize")
            problem = check_delta(delta, path, fmt)
            if problem:
                raise ValidationError("delta %s %s; refused [rule R4, %s]" % (delta, problem, _policy.SECURITY_DOC),
                                      domain=name, host=host, hint="nothing of it was used; revert the resize")
            commit_delta(delta, path, fmt)
            note(delta)
            os.unlink(delta)
            done.append("committed %s into %s" % (delta, path))
    return done
