# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ending a migration: revert (also the rollback) and confirm, per side. Private.

Safety rule: only what this migration made is ever removed. On the destination that is the domain
whose record carries this migration's id and the files listed in received.jsonl (plus their
.hvresize-part leftovers). On the source, disks are removed only by confirm.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil

from . import live, parts, precopy
from . import plan as plan_mod
from . import record as record_mod
from . import state as state_mod
from ._transfer import keys, local, markers
from ._transfer.wire import PART_SUFFIX
from .connection import Connection, get_record, hostname, inactive_xml, libvirt, libvirt_error, set_record, state_of
from .domain import check_domain_name, own_files
from .errors import ResizeError, ValidationError
from .finish import CLOSED_ALLOWED, made_here, remove_markers


def _move(rec, status, note):
    if rec.get("status") == status:
        return rec
    return record_mod.transition(rec, status, note)


def _vm_lock(params, vm_uuid, operation, check_mode, name, host):
    """The VM's lock on this host (state.vm_lock), or nothing in check mode or when no VM is known."""
    if check_mode or not vm_uuid:
        return contextlib.nullcontext()
    return state_mod.vm_lock(params["state_dir"], vm_uuid, operation, params["migration_id"], name, host)


# The daemon (not only the bindings) must know VIR_DOMAIN_UNDEFINE_KEEP_TPM: libvirt 8.9.0.
KEEP_TPM_SINCE = 8009000


def _remove_domain(dom, name, keep_tpm=True):
    """Undefine the domain. The NVRAM store is a file of the migration like a disk (it may sit on
    shared storage the other host uses): the caller deletes exactly the files the record lists,
    libvirt none. The vTPM's state too with keep_tpm (where the daemon can keep it; an older one
    deletes it itself, as it does without keep_tpm)."""
    try:
        if dom.isActive():
            dom.destroy()
        flags = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA \
            | libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM
        if keep_tpm and hasattr(libvirt, "VIR_DOMAIN_UNDEFINE_KEEP_TPM") \
                and dom.connect().getLibVersion() >= KEEP_TPM_SINCE:
            flags |= libvirt.VIR_DOMAIN_UNDEFINE_KEEP_TPM
        dom.undefineFlags(flags)
    except libvirt.libvirtError as exc:
        raise libvirt_error(exc, "cannot remove the domain", domain=name)


def revert_destination(params, check_mode):
    name = check_domain_name(params["instance"])
    mid = state_mod.check_id(params["migration_id"])
    host = hostname()
    with Connection(params["uri"]) as c:
        srec = state_mod.read_record(params["state_dir"], mid)
        vm_uuid = (srec or {}).get("uuid")
        if not vm_uuid:
            found = c.find(name)
            vm_uuid = found.UUIDString() if found is not None else None
        with _vm_lock(params, vm_uuid, "revert", check_mode, name, host), \
                _no_receiver(params, mid, check_mode, name, host):
            dom = c.find(name)  # again, under the lock: a finish may have defined it meanwhile
            return _revert_destination(params, check_mode, c, dom, name, mid, host)


@contextlib.contextmanager
def _no_receiver(params, mid, check_mode, name, host):
    """Refuse while a copy into this host is being received for the migration (the receiver holds
    <migration dir>/receive.lock for each disk it writes), and keep the next disk out until done."""
    path = os.path.join(state_mod.migration_dir(params["state_dir"], mid), "receive.lock")
    if check_mode or not os.path.isdir(os.path.dirname(path)):
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValidationError("a copy into this host is running for migration %s" % mid, domain=name, host=host,
                                  hint="wait for the resize to end (it rolls back by itself if it fails), then revert")
        yield
    finally:
        os.close(fd)


def _revert_destination(params, check_mode, c, dom, name, mid, host):
    drec = get_record(dom) if dom is not None else None
    srec = state_mod.read_record(params["state_dir"], mid)
    ours = drec if (drec or {}).get("id") == mid else None
    if ours and ours.get("status") in ("confirming", "confirmed"):
        # V1: after confirm the domain here is the VM's only home; never remove it.
        raise ValidationError("migration %s is %s here: the VM lives on this host now; refusing to remove it"
                              % (mid, ours["status"]), domain=name, host=host)
    if ours and ours.get("mode") == "live":
        return live.revert(params, check_mode, c, dom, ours)
    # Same host, as this host's own prep recorded it, or as this host's own record of the domain says
    # (only this host writes that record: X2): the domain carrying this id is the VM. Never remove it.
    if (srec and srec.get("same_host")) or (ours and ours.get("same_host") and ours.get("source") == host):
        return revert_in_place(params, check_mode, c, dom, ours)
    obs = _observe_destination(params, dom, drec, srec, name, mid)
    steps = revert_destination_plan(obs)
    if check_mode:
        return {"changed": bool(steps), "actions": [text for _kind, text, _arg in steps], "host": host}
    todo = {
        # Ours (prep proved no TPM state for this UUID was here, and no other migration of it is
        # open): libvirt removes whatever TPM state it made for it here.
        "domain": lambda _arg: _remove_domain(dom, name, keep_tpm=False),
        # Checked again when their turn comes: removing the domain removes what libvirt keeps for it
        # (its TPM's state directory).
        "file": lambda path: local.safe_unlink(path) if os.path.lexists(path) else None,
        # A made directory goes only while it is still the one prep made (same inode, P4).
        "dir": lambda entry: shutil.rmtree(entry["path"]) if made_here(entry, (srec or {}).get("uuid")) else None,
        "marker": lambda path: markers.remove_markers([path]),
        "key": lambda _arg: keys.edit_authorized_keys(params["authorized_keys"], remove_id=mid),
        "claim": lambda _arg: state_mod.remove(params["state_dir"], mid),
    }
    done = plan_mod.execute([plan_mod.Step(kind, text, apply=(lambda k=kind, a=arg: todo[k](a)))
                             for kind, text, arg in steps])
    if not done["ok"]:
        raise done["error"]
    return {"changed": bool(steps), "actions": [text for _kind, text, _arg in steps], "host": host}


def _observe_destination(params, dom, drec, srec, name, mid):
    """What a revert on the destination finds there (only this migration's things): read, never
    changed."""
    allowed = []
    for leftover in ("allowed.json", CLOSED_ALLOWED):  # the paths prep let the receiver write
        allowed_path = os.path.join(state_mod.migration_dir(params["state_dir"], mid), leftover)
        if os.path.exists(allowed_path):
            with open(allowed_path) as fh:
                allowed += list(json.load(fh))
    received = [entry["path"] for entry in state_mod.received(params["state_dir"], mid)]
    files = received + [p + PART_SUFFIX for p in allowed + received]
    return {
        "name": name,
        "domain_ours": dom is not None and (drec or {}).get("id") == mid,
        "files": sorted(p for p in set(files) if os.path.lexists(p)),
        # Directories prep made for state files (a vTPM's): named in its record before they were
        # made, proven absent before (P4), so all that is in them is this migration's.
        "made_dirs": _outermost([e for e in (srec or {}).get("made_dirs") or [] if made_here(e, srec.get("uuid"))]),
        "markers": [p for p in (srec or {}).get("markers") or []
                    if os.path.lexists(p) or os.path.lexists(p + ".tmp")],
        "key": keys.has_key(params["authorized_keys"], mid),
        "claim": os.path.isdir(state_mod.migration_dir(params["state_dir"], mid)),
    }


def _outermost(entries):
    """Made directories not inside another one of the list (removing that one removes them)."""
    paths = [e["path"] for e in entries]
    return [e for e in entries if not any(e["path"] != q and e["path"].startswith(q.rstrip("/") + "/") for q in paths)]


def revert_destination_plan(obs):
    """The steps of a revert on the destination, from what it found there (pure): [(kind, text,
    argument)]. Disks on shared storage are never among them: they are the source's disks (its
    revert puts its backup back over them); only our markers go."""
    steps = []
    if obs["domain_ours"]:
        steps.append(("domain", "remove domain %s" % obs["name"], None))
    steps += [("file", "delete %s" % path, path) for path in obs["files"]]
    steps += [("dir", "delete %s/" % entry["path"], entry) for entry in obs["made_dirs"]]
    steps += [("marker", "delete marker %s" % path, path) for path in obs["markers"]]
    if obs["key"]:
        steps.append(("key", "revoke transfer key", None))
    if obs["claim"]:
        steps.append(("claim", "release claim", None))
    return steps


def revert_in_place(params, check_mode, c, dom, drec):
    """Same-host revert: put the backups back over the grown disks and the original definition back,
    or, when the disks were never touched, just drop the backups. The record stays for revert_source."""
    name, mid = params["instance"], params["migration_id"]
    disks = (drec or {}).get("disks") or []
    # Only a backup of one of the domain's own disks, beside it, is ever put back.
    own = own_files(inactive_xml(dom)) if dom is not None else set()
    for d in disks:
        if d.get("path") not in own or d.get("backup") not in (None, d["path"] + local.BACKUP_SUFFIX):
            raise ValidationError("the record names %s (backup %s), which is not a disk of %s with its backup beside "
                                  "it; refusing to restore it" % (d.get("path"), d.get("backup"), name),
                                  domain=name, host=hostname())
    modified = bool(drec and drec.get("modified"))
    actions = []
    for d in disks:
        backup = d.get("backup")
        if backup and os.path.exists(backup):
            actions.append(("restore %s from %s" % (d["path"], backup)) if modified else ("delete backup %s" % backup))
        part = (backup or d["path"] + local.BACKUP_SUFFIX) + PART_SUFFIX
        if os.path.lexists(part):
            actions.append("delete %s" % part)
    if modified:
        actions.append("restore the original definition of %s" % name)
    if os.path.isdir(state_mod.migration_dir(params["state_dir"], mid)):
        actions.append("release claim")
    if check_mode or not actions:
        return {"changed": bool(actions), "actions": actions, "host": hostname()}
    if modified:
        try:
            if dom.isActive():
                dom.destroy()
        except libvirt.libvirtError as exc:
            raise libvirt_error(exc, "cannot stop the resized domain to restore its backup", domain=name)
    for d in disks:
        backup = d.get("backup")
        if backup and os.path.exists(backup):
            if modified:
                os.replace(backup, d["path"])
            else:
                os.unlink(backup)
        part = (backup or d["path"] + local.BACKUP_SUFFIX) + PART_SUFFIX
        if os.path.lexists(part):
            os.unlink(part)
    if modified:
        rec = dict(drec, modified=False, restored=True)
        try:
            c.conn.defineXML(record_mod.embed(drec["original_xml"], rec))
        except libvirt.libvirtError as exc:
            raise libvirt_error(exc, "cannot restore the original definition", domain=name)
    state_mod.remove(params["state_dir"], mid)
    return {"changed": True, "actions": actions, "host": hostname()}


def revert_source(params, check_mode):
    name = check_domain_name(params["instance"])
    mid = state_mod.check_id(params["migration_id"])
    host = hostname()
    with Connection(params["uri"]) as c:
        dom = c.find(name)
        if dom is None:
            raise ValidationError("domain is not defined on the source; nothing to revert to", domain=name,
                                  host=host, hint="if the resize was confirmed, the original is gone")
        rec = get_record(dom)
        if not rec or rec.get("id") != mid:
            # This migration never touched the source (it failed before power-off): nothing to undo.
            # (No lock either: another operation may hold the VM, e.g. the run that won a race.)
            _drop_xfer(params, check_mode)
            return {"changed": False, "actions": [], "state": state_of(dom), "host": host}
        with _vm_lock(params, dom.UUIDString(), "rollback" if params.get("rollback") else "revert", check_mode,
                      name, host):
            return _revert_source(params, check_mode, dom, name, mid, host)


def _drop_xfer(params, check_mode):
    """The one-off private key of a killed copy step, if it left one, and its progress file."""
    path = state_mod.xfer_dir(params["state_dir"], params["migration_id"])
    progress = state_mod.progress_path(params["state_dir"], params["migration_id"])
    dropped = False
    for leftover in (progress, progress + ".tmp"):
        if not check_mode and os.path.lexists(leftover):
            os.unlink(leftover)
            dropped = True
    if not check_mode and os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
        return True
    return dropped


def _revert_source(params, check_mode, dom, name, mid, host):
    rec = get_record(dom)  # again, under the lock
    actions = []
    if not rec or rec.get("id") != mid:
        return {"changed": False, "actions": [], "state": state_of(dom), "host": host}
    _drop_xfer(params, check_mode)
    if rec.get("rolled_back") or rec.get("status") == "reverted":
        # Done before: the VM is as it was (and what the operator did with it since stays so).
        return {"changed": False, "actions": [], "state": state_of(dom), "migration": rec, "host": host}
    if rec.get("mode") == "live" and not rec.get("restored"):
        # The destination step (live.revert) puts the definition back; until it did, the record
        # stays open for recover.yml.
        raise ValidationError("live resize %s is not undone yet (the destination step did not complete); the "
                              "record stays open" % mid, domain=name, host=host,
                              hint="run playbooks/recover.yml -e instance=%s" % name)
    if params.get("keep_off") and rec.get("copied"):
        # The destination had the copy and did not say it removed it: it may run the VM. Starting
        # the original (or putting a shared disk's backup back under it) would make two.
        note = ("the destination may run the VM (its cleanup did not complete): the original stays off "
                "here; run playbooks/recover.yml once the destination answers")
        if rec.get("status") != "error" or rec["history"][-1].get("note") != note:
            if not check_mode:
                rec = record_mod.transition(rec, "error", note)
                set_record(dom, rec)
            return {"changed": True, "actions": ["record error; the original stays off"], "state": state_of(dom),
                    "migration": rec, "host": host, "kept_off": True}
        return {"changed": False, "actions": [], "state": state_of(dom), "migration": rec, "host": host,
                "kept_off": True}
    old_state = rec.get("old_power_state")
    if rec["status"] == "confirmed":
        raise ValidationError("migration %s was confirmed; it cannot be reverted" % mid, domain=name, host=host)
    final = "error" if params.get("rollback") else "reverted"
    # Shared storage: the destination may have grown and used the very same disk; its backup,
    # taken while the VM was off, goes back over it (the backup exists only once complete).
    restore = [d for d in rec.get("disks", []) if d.get("shared") and local.is_regular(d.get("backup") or "")]
    parts = [d["backup"] + PART_SUFFIX for d in rec.get("disks", [])
             if d.get("shared") and os.path.lexists((d.get("backup") or "") + PART_SUFFIX)]
    if restore and dom.isActive():
        raise ValidationError("the source domain is running; refusing to restore its shared disks under it",
                              domain=name, host=host)
    # A pre-copy's deltas go back into the disks first (the VM's writes since it began are in them).
    pc_steps = precopy.undo_source_steps(dom, libvirt, rec)
    actions += [text for _kind, text, _arg in pc_steps]
    actions += ["restore %s from %s" % (d["path"], d["backup"]) for d in restore]
    actions += ["delete %s" % p for p in parts]
    if rec["status"] != final or (params.get("rollback") and not rec.get("rolled_back")):
        actions.append("record %s" % final)
    if rec.get("old_autostart") and not dom.autostart():
        actions.append("autostart %s again" % name)
    if old_state == "running" and not dom.isActive():
        actions.append("start %s" % name)
    if check_mode or not actions:
        return {"changed": bool(actions), "actions": actions, "state": state_of(dom), "host": host}
    if pc_steps:
        rec = _undo_precopy(dom, rec, pc_steps, name, host)
    for d in restore:
        os.replace(d["backup"], d["path"])
    for p in parts:
        os.unlink(p)
    if restore:
        rec = dict(rec, disks=[dict(d, backup=None, restored=True) if d in restore else d
                               for d in rec.get("disks", [])])
    note = params.get("reason") or "reverted"
    if params.get("rollback"):
        # The failed resize is undone: the record keeps the error and says the VM is back as it was.
        rec = record_mod.transition(rec, "error", note)
        rec = dict(rec, rolled_back=True)
        rec["history"] = rec["history"] + [{"at": record_mod.now(), "status": "error",
                                            "note": "rolled back: original definition, disks and power state"}]
    else:
        if rec["status"] not in ("error", "reverting", "reverted"):
            rec = _move(rec, "reverting", note)
        rec = _move(rec, "reverted", note)
    set_record(dom, rec)
    if rec.get("old_autostart") and not dom.autostart():
        try:
            dom.setAutostart(1)
        except libvirt.libvirtError as exc:
            raise libvirt_error(exc, "cannot turn autostart back on", domain=name)
    if old_state == "running" and not dom.isActive():
        try:
            dom.create()
        except libvirt.libvirtError as exc:
            raise libvirt_error(exc, "cannot start the original domain again", domain=name)
    return {"changed": True, "actions": actions, "state": state_of(dom), "migration": rec, "host": host}


def confirm_destination(params, check_mode):
    name = check_domain_name(params["instance"])
    mid = state_mod.check_id(params["migration_id"])
    host = hostname()
    with Connection(params["uri"]) as c:
        dom = c.find(name)
        if dom is None:
            raise ValidationError("migration %s is not on this host's domain" % mid, domain=name, host=host)
        with _vm_lock(params, dom.UUIDString(), "confirm", check_mode, name, host):
            return _confirm_destination(params, check_mode, dom, name, mid, host)


def _confirm_destination(params, check_mode, dom, name, mid, host):
    """step begin: finished -> confirming, the point of no return that a revert can no longer pass
    (the destination's record decides between a confirm and a revert racing each other); step end:
    -> confirmed, claim released (after the source deleted its backup)."""
    rec = get_record(dom)
    if not rec or rec.get("id") != mid:
        raise ValidationError("migration %s is not on this host's domain" % mid, domain=name, host=host)
    if rec["status"] == "confirmed" or (params.get("step") == "begin" and rec["status"] == "confirming"):
        return {"changed": False, "migration": rec}
    if rec["status"] not in ("finished", "confirming"):
        raise ValidationError("migration %s is %s; only a finished resize can be confirmed"
                              % (mid, rec["status"]), domain=name, host=host)
    # A live resize grows its disks when it is confirmed (never before: a revert had nothing to undo
    # there), before the point of no return: a disk that cannot grow leaves the resize finished.
    grown = live.grow_pending(dom, rec, check_mode=True) \
        if rec.get("mode") == "live" and rec["status"] == "finished" else []
    if params.get("step") == "begin" or (grown and rec["status"] == "finished"):
        if check_mode:
            return {"changed": True, "actions": grown + ["record confirming"]}
        if grown:
            live.grow_pending(dom, rec, check_mode=False)
        rec = record_mod.transition(rec, "confirming", "confirm requested; the source deletes its backup next")
        set_record(dom, rec)
        if params.get("step") == "begin":
            return {"changed": True, "migration": rec, "actions": grown + ["record confirming"]}
    if check_mode:
        return {"changed": True, "actions": ["record confirmed", "release claim"]}
    rec = _move(rec, "confirming", "confirm requested")
    rec = record_mod.transition(rec, "confirmed", "source cleaned up; claim released")
    rec.pop("original_xml", None)
    set_record(dom, rec)
    srec = state_mod.read_record(params["state_dir"], mid)
    remove_markers(srec or {})
    state_mod.remove(params["state_dir"], mid)
    keys.edit_authorized_keys(params["authorized_keys"], remove_id=mid)
    return {"changed": True, "migration": rec, "actions": grown + ["record confirmed", "release claim"]}


def _undo_precopy(dom, rec, steps, name, host):
    """Commit the pre-copy's deltas into the disks (block commit and pivot while the VM runs,
    qemu-img commit when it is off), define the original definition again, delete the deltas."""
    for kind, text, arg in steps:
        try:
            if kind == "commit-live":
                precopy.commit_live(dom, libvirt, arg)
            elif kind == "commit":
                precopy.commit_offline(arg)
            elif kind == "define" and arg:
                dom.connect().defineXML(record_mod.embed(arg, rec))
            elif kind == "delete" and os.path.lexists(arg):
                os.unlink(arg)
        except libvirt.libvirtError as exc:
            raise libvirt_error(exc, "cannot undo the pre-copy (%s)" % text, domain=name,
                                hint="run the revert or playbooks/recover.yml again; the deltas are kept until "
                                     "they are committed")
        except ResizeError as exc:
            exc.domain, exc.host = exc.domain or name, exc.host or host
            raise
    rec = dict(rec, precopy=dict(rec["precopy"], undone=True))
    set_record(dom, rec)
    return rec


def confirm_source(params, check_mode):
    """Delete the backup: the old definition and the disks this migration copied."""
    name = check_domain_name(params["instance"])
    mid = state_mod.check_id(params["migration_id"])
    host = hostname()
    with Connection(params["uri"]) as c:
        dom = c.find(name)
        if dom is None:
            return {"changed": _drop_xfer(params, check_mode), "actions": [], "msg": "nothing left on the source"}
        with _vm_lock(params, dom.UUIDString(), "confirm", check_mode, name, host):
            return _confirm_source(params, check_mode, dom, name, mid, host)


def _confirm_source(params, check_mode, dom, name, mid, host):
    rec = get_record(dom)
    if not rec or rec.get("id") != mid:
        raise ValidationError("the domain here is not the source of migration %s; refusing to delete it" % mid,
                              domain=name, host=host)
    _drop_xfer(params, check_mode)
    if rec.get("same_host"):
        # Resized in place: the backups are all there is to delete; the domain is the VM.
        if rec["status"] not in ("finished", "confirming", "confirmed"):
            raise ValidationError("migration %s is %s; only a finished resize can be confirmed"
                                  % (mid, rec["status"]), domain=name, host=host)
        backups = [d["backup"] for d in rec.get("disks", []) if d.get("backup") and os.path.exists(d["backup"])]
        if not check_mode:
            for path in backups:
                os.unlink(path)
        return {"changed": bool(backups), "actions": ["delete backup %s" % p for p in backups]}
    if rec["status"] != "post-migrating":
        raise ValidationError("migration %s is %s on the source; only a completed copy can be confirmed"
                              % (mid, rec["status"]), domain=name, host=host)
    if dom.isActive():
        raise ValidationError("the source domain is running; refusing to delete it", domain=name, host=host,
                              hint="shut it off, or revert the resize")
    # A disk on shared storage is the one the destination now uses: only its backup goes.
    paths = [d["backup"] if d.get("shared") else d["path"] for d in rec.get("disks", [])]
    paths = [p for p in paths if p]
    actions = ["undefine %s" % name] + ["delete %s" % p for p in paths if os.path.exists(p)]
    # The vTPM's directory goes with the VM (libvirt's own layout, made from the UUID): once its state
    # file was copied, what is left there is swtpm's lock.
    tpm = parts.tpm_state_dir(dom.UUIDString()) if any(
        d.get("path") in [parts.tpm_state_path(dom.UUIDString(), v) for v in parts.TPM_STATE]
        for d in rec.get("disks", [])) else None
    if tpm and os.path.lexists(tpm):
        actions.append("delete %s/" % tpm)
    if check_mode:
        return {"changed": True, "actions": actions}
    # Files first, the domain last: a confirm stopped half-way finds the domain and its record again.
    for path in paths:
        if os.path.exists(path):
            os.unlink(path)
    if tpm and os.path.lexists(tpm):
        shutil.rmtree(tpm)
    _remove_domain(dom, name)
    return {"changed": True, "actions": actions}
