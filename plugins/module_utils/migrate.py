# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""virt_power_off_migrate: power off on the source, keep the backup, copy disks. Private."""

from __future__ import annotations

import contextlib
import os
import shutil
import time

from . import _policy, parts, precopy, storage
from . import record as record_mod
from . import state as state_mod
from ._transfer import local, markers, sender
from ._transfer.progress import Progress
from .connection import Connection, hostname, libvirt, libvirt_error, power_off, set_record, state_of
from .domain import check_domain_name
from .errors import ResizeError, ValidationError
from .facts import describe_instance
from .faults import checkpoint
from .flavor import MOVABLE_STATES


def _check_transfer(params, name, host):
    """T1-T3 before anything is touched: what reaches ssh's command line and known_hosts."""
    try:
        _policy.known_hosts_line(params["dest"], params["dest_port"], params["dest_host_key"])
        sender.ssh_argv(params["dest"], params["dest_port"], "key", "known", user=params["transfer_user"],
                        cipher=params["ssh_cipher"] or None)
    except ValidationError as exc:
        exc.domain, exc.host = name, host
        raise


def power_off_migrate(params, check_mode):
    name = check_domain_name(params["instance"])
    mid = state_mod.check_id(params["migration_id"])
    host = hostname()
    if (params.get("bandwidth_limit") or 0) < 0:
        raise ValidationError("bandwidth_limit must be 0 (no limit) or a positive number of MiB/s, got %d"
                              % params["bandwidth_limit"], domain=name, host=host)
    if not params.get("same_host"):
        _check_transfer(params, name, host)
    with Connection(params["uri"]) as c:
        dom = c.find(name)
        if dom is None:
            raise ValidationError("domain is not defined on this host", domain=name, host=host)
        lock = contextlib.nullcontext() if check_mode else \
            state_mod.vm_lock(params["state_dir"], dom.UUIDString(), "power-off and copy", mid, name, host)
        with lock:  # held until the copy ends: the record is read, checked and written by one run only
            return _power_off_migrate(params, check_mode, dom, name, mid, host)


def _power_off_migrate(params, check_mode, dom, name, mid, host):
    inst = describe_instance(dom)
    rec = inst["migration"]
    if rec and rec.get("id") == mid and rec.get("status") == "post-migrating":
        return {"changed": False, "migration": rec, "old_power_state": rec.get("old_power_state"),
                "disks": rec.get("disks", []), "msg": "disks already copied for this migration"}
    if record_mod.is_open(rec):
        raise ValidationError("another migration of this VM is open: %s (status %s)"
                              % (rec["id"], rec["status"]), domain=name, host=host,
                              hint="confirm or revert it first")
    if inst["state"] not in MOVABLE_STATES:
        raise ValidationError("the VM is %s; only a running or shut-off VM can be resized" % inst["state"],
                              domain=name, host=host, hint="resume or repair it first")
    disks = inst["moved_files"]
    same_host = bool(params.get("same_host"))
    uncarried = [] if same_host else parts.uncarried(inst)
    if uncarried:
        raise ValidationError("the VM has what a move to another host cannot carry yet: %s" % "; ".join(uncarried),
                              domain=name, host=host, hint="nothing was changed; or resize on the same host")
    for d in disks:
        if same_host and os.path.lexists(d["path"] + local.BACKUP_SUFFIX):
            raise ValidationError("a backup %s%s already exists" % (d["path"], local.BACKUP_SUFFIX),
                                  domain=name, host=host,
                                  hint="it is left from an earlier resize: confirm or revert that first")
    live_copy = _precopy_candidates(params, inst, disks, same_host, name, host)
    plan = {"changed": True, "old_power_state": inst["state"],
            "disks": [{"path": d["path"], "allocation": d.get("allocation"), "virtual_size": d.get("virtual_size")}
                      for d in disks],
            "precopy": {"disks": [d["path"] for d in live_copy]}}
    if check_mode:
        return plan
    old_state = inst["state"]
    rec = record_mod.new_record(name, inst["uuid"], host, params["dest_host"], params.get("old_flavor"),
                                params.get("new_flavor"), migration_id=mid,
                                note="claim made on %s" % params["dest_host"])
    rec["old_power_state"] = old_state
    rec["old_autostart"] = inst["autostart"]
    if inst.get("firmware_pin") and not same_host:
        # What libvirt chose for the firmware while the VM ran: a resumed move renders it again.
        rec["firmware_pin"] = inst["firmware_pin"]
    if same_host:
        # Resize in place: the backup is a verified copy beside each disk, and the original
        # definition travels in the record, so that revert can restore both exactly.
        rec["same_host"] = True
        rec["original_xml"] = record_mod.without_record(inst["defined_xml"])  # records never nest
        # Name the backups before making them, so that a rollback finds even a half-made one
        # (the paths were checked free above: whatever is there later is ours).
        rec["disks"] = [{"path": d["path"], "backup": d["path"] + local.BACKUP_SUFFIX} for d in disks]
    else:
        rec["disks"] = plan_copy(disks, mid, name, host, params)
    rec = record_mod.transition(rec, "migrating", "powering off on %s" % host)
    set_record(dom, rec)
    if inst["autostart"] and not same_host:
        # The VM will live on the destination: a reboot of this host must not start the original
        # too. Revert (and rollback) turn it back on; the destination's copy gets it at finish.
        try:
            dom.setAutostart(0)
        except libvirt.libvirtError as exc:
            raise libvirt_error(exc, "cannot turn autostart off on the source", domain=name)
    live_copy = [d for d, e in zip(disks, rec["disks"]) if d in live_copy and not e.get("shared")]
    summary = {"rounds": 0, "live_bytes": 0, "after_stop_bytes": 0, "disks": [d["path"] for d in live_copy]}
    pre, progress = {}, None
    try:
        if live_copy:
            rec, pre = _precopy(dom, rec, live_copy, params, summary, name, host)  # each round has its progress
        progress = Progress(state_mod.progress_path(params["state_dir"], mid),
                            [d for d, r in zip(disks, rec["disks"]) if not r.get("shared")], every=1.0)
        progress.set_phase("shutting down")
        down_started = time.monotonic()
        stop = power_off(dom, timeout=params["shutdown_timeout"],
                         retry_interval=params["shutdown_retry_interval"])
        shared = [r["path"] for r in rec["disks"] if r.get("shared")]
        where = "backups on this host" if same_host else params["dest"]
        rec = record_mod.transition(rec, "migrating", "stopped (%s, %.1fs); copying %d disk(s) to %s%s"
                                    % (stop["method"], stop["seconds"], len(disks) - len(shared), where,
                                       "; %d on shared storage (backup beside it)" % len(shared) if shared else ""))
        set_record(dom, rec)
        checkpoint("shutdown")
        if same_host:
            progress.set_phase("backing up on this host")
            copied = [local.local_copy(d["path"], d["path"] + local.BACKUP_SUFFIX) for d in disks]
        else:
            copied = copy_disks(disks, rec["disks"], params, progress, pre)
        checkpoint("copy")
    except ResizeError as exc:
        rec = record_mod.transition(rec, "error", exc.msg)
        set_record(dom, rec)
        exc.domain, exc.host = exc.domain or name, exc.host or host
        raise
    finally:
        if progress is not None:
            progress.close()
    summary["after_stop_bytes"] = sum(int(c.get("bytes") or 0) for c in copied if c.get("after_stop"))
    rec["disks"] = copied
    rec = record_mod.transition(rec, "post-migrating", "%d file(s) copied and verified%s" % (
        len(copied), "; %d bytes while the VM ran (%d round(s)), %d after the power-off"
        % (summary["live_bytes"], summary["rounds"], summary["after_stop_bytes"]) if pre else ""))
    rec["copied"] = True  # from here on the destination may run the VM: the source starts it again only once
    #                       the destination has removed its copy (settle.revert_source keep_off)
    set_record(dom, rec)
    plan.update({"shutdown": stop, "disks": copied, "migration": rec, "state": state_of(dom), "precopy": summary,
                 "down_seconds": round(time.monotonic() - down_started, 3)})
    return plan


def _precopy_candidates(params, inst, disks, same_host, name, host):
    """The disks this run copies while the VM still runs (none for a shut-off VM, a same-host
    resize or with precopy off); a delta file left beside one refuses the run before anything."""
    if same_host or not params.get("precopy", True) or inst["state"] != "running":
        return []
    rounds = params.get("precopy_rounds") or 3
    if not 1 <= rounds <= precopy.MAX_ROUNDS:
        raise ValidationError("precopy_rounds must be between 1 and %d, got %d" % (precopy.MAX_ROUNDS, rounds),
                              domain=name, host=host)
    out = []
    for d in disks:
        if not precopy.eligible(d):
            continue
        left = [p for p in precopy.all_delta_paths(d["path"]) if os.path.lexists(p)]
        if left:
            raise ValidationError("%s is beside the disk: left from an earlier resize, or planted" % ", ".join(left),
                                  domain=name, host=host,
                                  hint="nothing was changed; revert or recover that resize, or remove the file if "
                                       "no resize of this VM is open")
        if storage.image_info(d["path"], d["format"]).get("backing_file"):
            continue  # a chain of its own: never pre-copied (the move refuses it anyway: R3)
        out.append(d)
    return out


def _precopy(dom, rec, disks, params, summary, name, host):
    """Rounds of copy while the VM runs: each puts a new delta over every disk (the guest writes
    there from then on) and sends the layer below it, now stable: the disks themselves first, then
    the delta before. Returns the record and, per disk, what was sent and the top delta."""
    rounds = params.get("precopy_rounds") or 3
    threshold = int(params.get("precopy_delta_mb") or 0) << 20
    layers = [{"path": d["path"], "target": d["target"], "format": d["format"], "deltas": []} for d in disks]
    rec["precopy"] = {"original_xml": record_mod.without_record(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)),
                      "disks": layers}
    sent = {d["path"]: [] for d in disks}
    k = 0
    while True:
        k += 1
        if not dom.isActive():
            k -= 1
            break  # the guest stopped by itself: the rest goes after the "power-off" as today
        short = precopy.short_of_room(layer["path"] for layer in layers)
        if short:
            # The guest's writes go to the deltas beside its disks from the snapshot on: never let
            # them fill this host's storage (the guest would stop on a write error).
            summary["stopped"] = "less than %d MiB free in %s" % (precopy.ROOM >> 20, short)
            k -= 1
            break
        for layer in layers:
            layer["deltas"].append(precopy.delta_path(layer["path"], k))
        # Named in the record before it exists: a revert finds even a delta made by a killed run.
        rec = record_mod.transition(rec, "migrating", "pre-copy round %d: a delta over each disk, the VM runs" % k)
        set_record(dom, rec)
        try:
            precopy.take_snapshot(dom, libvirt, {layer["target"]: layer["deltas"][-1] for layer in layers})
        except libvirt.libvirtError as exc:
            raise libvirt_error(exc, "cannot put the pre-copy's delta over the disks", domain=name,
                                hint="the rollback gives the disks back with the VM running; resize with "
                                     "resize_precopy=false to copy after the power-off instead")
        files = [layer["path"] if k == 1 else layer["deltas"][-2] for layer in layers]
        progress = Progress(state_mod.progress_path(params["state_dir"], rec["id"]),
                            [{"allocation": precopy.allocated(f)} for f in files], every=1.0)
        try:
            progress.set_phase("pre-copying while the VM runs (round %d)" % k)
            done = _send_files(files, params, progress,
                               compress=[k == 1 and layer["format"] == "raw" for layer in layers],
                               guard=_room_guard([layer["path"] for layer in layers], name, host))
        finally:
            progress.close()
        round_bytes = 0
        for layer, res in zip(layers, done):
            sent[layer["path"]].append(res)
            round_bytes += int(res.get("bytes") or 0)
        summary["rounds"], summary["live_bytes"] = k, summary["live_bytes"] + round_bytes
        if k == 1:
            checkpoint("precopy", domain=name, host=host)
        top = sum(precopy.allocated(layer["deltas"][-1]) for layer in layers)
        if not precopy.next_round(k, rounds, top, round_bytes, threshold):
            break
    rec = record_mod.transition(rec, "migrating", "pre-copied %d bytes in %d round(s) while the VM ran%s"
                                % (summary["live_bytes"], k, "; then %s" % summary["stopped"]
                                   if summary.get("stopped") else ""))
    set_record(dom, rec)
    return rec, {layer["path"]: {"sent": sent[layer["path"]], "top": layer["deltas"][-1]}
                 for layer in layers if layer["deltas"]}


def _room_guard(paths, name, host, every=1.0):
    """While a round is sent, the guest writes into its deltas: stop (the rollback commits them back,
    the VM never stopped) before they fill this host's storage."""
    last = [0.0]

    def guard():
        now = time.monotonic()
        if now - last[0] < every:
            return
        last[0] = now
        short = precopy.short_of_room(paths, room=precopy.ROOM // 4)
        if short:
            raise ResizeError("less than %d MiB left free in %s while the VM wrote into its pre-copy delta there; "
                              "stopped before it fills up" % (precopy.ROOM // 4 >> 20, short), domain=name, host=host,
                              hint="free space there, or resize with resize_precopy=false (the VM is down "
                                   "while all of its disks are copied)")
    return guard


def _send_files(paths, params, progress, compress, guard=None):
    limit = int(params.get("bandwidth_limit") or 0) * 1024 * 1024
    tmp, key, known = _transfer_files(params)

    def update(data):
        if guard is not None:
            guard()
        progress.update(data)

    try:
        out = []
        for path, raw in zip(paths, compress):
            progress.next_disk(path)
            z = bool(params.get("compress")) and raw
            done = sender.send(path, _argv(params, key, known, z), progress=update, bandwidth_limit=limit)
            done["compressed"] = z
            out.append(done)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _transfer_files(params):
    """A private dir with the one-off key and the destination's pinned host key."""
    tmp = state_mod.xfer_dir(params["state_dir"], params["migration_id"])
    os.makedirs(os.path.dirname(tmp), mode=0o700, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)  # a killed earlier attempt of this very step
    os.mkdir(tmp, 0o700)
    key = os.path.join(tmp, "id")
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(params["transfer_private_key"].strip() + "\n")
    known = os.path.join(tmp, "known_hosts")
    with open(known, "w") as fh:
        fh.write(_policy.known_hosts_line(params["dest"], params["dest_port"], params["dest_host_key"]))
    return tmp, key, known


def _argv(params, key, known, compress=False):
    return sender.ssh_argv(params["dest"], params["dest_port"], key, known, user=params["transfer_user"],
                           cipher=params["ssh_cipher"] or None, compress=compress)


def plan_copy(disks, mid, name, host, params):
    """Before the VM is touched: which disks sit on storage shared with the destination (its
    marker is here), and whether the destination can take the rest. Returns the record's disks."""
    entries = []
    for d in disks:
        if markers.ack_marker(d["path"], mid, host):
            backup = d["path"] + local.BACKUP_SUFFIX
            if os.path.lexists(backup):
                raise ValidationError("a backup %s already exists" % backup, domain=name, host=host,
                                      hint="it is left from an earlier resize: confirm or revert that first")
            entries.append({"path": d["path"], "shared": True, "backup": backup})
        else:
            entries.append({"path": d["path"]})
    to_send = [d for d, e in zip(disks, entries) if not e.get("shared")]
    if not to_send:
        return entries
    tmp, key, known = _transfer_files(params)
    try:
        reply = sender.preflight(_argv(params, key, known), [d["path"] for d in to_send])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if reply["parts"]:
        raise ValidationError("%s on %s: left from an earlier copy, or planted; it is never followed or reused"
                              % (", ".join(reply["parts"]), params["dest_host"]), domain=name, host=host,
                              hint="remove it on the destination if no resize of this VM is running")
    if reply.get("present"):
        raise ValidationError("disk(s) %s already exist on %s, and their directory is not storage shared with "
                              "this host; they would be overwritten"
                              % (", ".join(reply["present"]), params["dest_host"]),
                              domain=name, host=host,
                              hint="remove the stale files on the destination if they are leftovers, or "
                                   "choose another destination")
    need = {}
    for d in to_send:
        need[os.path.dirname(d["path"])] = need.get(os.path.dirname(d["path"]), 0) + int(d.get("allocation") or 0)
    short = ["%s needs %d bytes, %d free" % (k, v, reply["free_bytes"].get(k, 0)) for k, v in sorted(need.items())
             if v > reply["free_bytes"].get(k, 0)]
    if short:
        raise ValidationError("not enough space on %s: %s" % (params["dest_host"], "; ".join(short)),
                              domain=name, host=host)
    return entries


def copy_disks(disks, entries, params, progress, pre=None):
    """Send every disk not on shared storage (of a disk pre-copied, only its top delta: what the
    guest wrote since the last round); back up the shared ones beside themselves."""
    limit = int(params.get("bandwidth_limit") or 0) * 1024 * 1024
    tmp, key, known = _transfer_files(params)
    try:
        progress.set_phase("copying")
        out = []
        for d, entry in zip(disks, entries):
            if entry.get("shared"):
                progress.set_phase("backing up on shared storage", disk=d["path"])
                done = local.local_copy(d["path"], entry["backup"])
                done["shared"] = True
                progress.set_phase("copying")
            elif d["path"] in (pre or {}):
                progress.next_disk(pre[d["path"]]["top"])
                out.extend(pre[d["path"]]["sent"])
                done = sender.send(pre[d["path"]]["top"], _argv(params, key, known), progress=progress.update,
                                   bandwidth_limit=limit)
                done["after_stop"] = True
            else:
                progress.next_disk(d["path"])
                compress = bool(params.get("compress")) and d.get("format") == "raw"
                done = sender.send(d["path"], _argv(params, key, known, compress), progress=progress.update,
                                   bandwidth_limit=limit)
                done["compressed"] = compress
                done["after_stop"] = True
            out.append(done)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
