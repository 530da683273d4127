# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A host's migration directory: records and claims as JSON, under one lock. Private.

<state_dir>/lock                        flock held while claims are read and written
<state_dir>/xfer/<id>/                  the source's one-off private key while the copy step runs
<state_dir>/vms/<uuid>.lock             flock held by the one operation on that VM on this host
                                        (power-off and copy, finish, confirm, revert); says who holds it
<state_dir>/migrations/<id>/record.json the record (with the claim: vcpus, memory_mb, disk_bytes)
<state_dir>/migrations/<id>/allowed.json paths the receiver may create
<state_dir>/migrations/<id>/receive.py  the receive-only script of this migration
<state_dir>/migrations/<id>/received.jsonl files received (path, sha256, bytes)
<state_dir>/maintenance.json            this host is in maintenance (a drain): {since, reason, drain_id,
                                        returning: the drain's way back runs (VMs may come back)}
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time

from . import record as record_mod
from .errors import ValidationError

ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def check_id(migration_id):
    if not isinstance(migration_id, str) or not ID_RE.fullmatch(migration_id):
        raise ValidationError("%r is not a migration id (a UUID)" % (migration_id,))
    return migration_id


def progress_path(state_dir, migration_id):
    """Where the source records a running copy's progress (removed when the copy ends)."""
    return os.path.join(state_dir, "progress", check_id(migration_id) + ".json")


def xfer_dir(state_dir, migration_id):
    """Where the one-off private key and the pinned host key live on the source while the copy step
    uses them; removed by that step, and by revert, confirm and recover if the step was killed."""
    return os.path.join(state_dir, "xfer", check_id(migration_id))


def migration_dir(state_dir, migration_id):
    return os.path.join(state_dir, "migrations", check_id(migration_id))


@contextlib.contextmanager
def locked(state_dir):
    os.makedirs(os.path.join(state_dir, "migrations"), mode=0o700, exist_ok=True)
    with open(os.path.join(state_dir, "lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _vm_lock_path(state_dir, vm_uuid):
    if not isinstance(vm_uuid, str) or not UUID_RE.fullmatch(vm_uuid):
        raise ValidationError("%r is not a domain UUID" % (vm_uuid,))
    return os.path.join(state_dir, "vms", vm_uuid.lower() + ".lock")


@contextlib.contextmanager
def vm_lock(state_dir, vm_uuid, operation, migration_id=None, domain=None, host=None):
    """One operation per VM on this host. Never waits: if another operation holds the VM, it is
    refused, naming that operation. The kernel drops the lock when its process ends, however it
    ends, so a killed run never leaves the VM locked."""
    path = _vm_lock_path(state_dir, vm_uuid)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            raise ValidationError(
                "another operation on this VM is running here: %s of migration %s (pid %s, since %s)"
                % (holder.get("operation", "?"), holder.get("migration_id") or "-", holder.get("pid", "?"),
                   holder.get("since", "?")), domain=domain, host=host,
                hint="wait for it to end and look again; only one operation per VM runs at a time",
                details={"running": holder})
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"operation": operation, "migration_id": migration_id, "pid": os.getpid(),
                                  "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode(), 0)
        yield
    finally:
        os.close(fd)


def vm_busy(state_dir, vm_uuid, locks="/proc/locks"):
    """Who holds the VM's lock on this host right now, or None. Read-only (for facts): it looks the
    lock up in the kernel's table instead of trying it, so it can never make an operation fail."""
    try:
        path = _vm_lock_path(state_dir, vm_uuid)
        st = os.stat(path)
    except (OSError, ValidationError):
        return None
    key = " %02x:%02x:%d " % (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    try:
        with open(locks) as fh:
            held = any("FLOCK" in line and key in line for line in fh)
    except OSError:
        return None
    if not held:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return {"operation": "unknown"}
    try:
        return _holder(fd) or {"operation": "unknown"}
    finally:
        os.close(fd)


def _holder(fd):
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.rename(tmp, path)


def write_record(state_dir, rec):
    mdir = migration_dir(state_dir, rec["id"])
    os.makedirs(mdir, mode=0o700, exist_ok=True)
    _write_json(os.path.join(mdir, "record.json"), rec)


def read_record(state_dir, migration_id):
    path = os.path.join(migration_dir(state_dir, migration_id), "record.json")
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def records(state_dir):
    base = os.path.join(state_dir, "migrations")
    out = []
    if not os.path.isdir(base):
        return out
    for name in sorted(os.listdir(base)):
        if ID_RE.fullmatch(name):
            rec = read_record(state_dir, name)
            if rec:
                out.append(rec)
    return out


def open_claims(state_dir):
    """Claims of migrations still open on this host (they hold resources until confirm/revert)."""
    return [r for r in records(state_dir) if record_mod.is_open(r) and r.get("claim")]


def claimed_totals(state_dir):
    """What open claims still hold beyond what the host already counts by itself.

    Once a migration is finished here its domain is defined at the new size, so libvirt's
    allocation counts it: the claim no longer adds vCPUs or memory. Disk data already received
    is in the files (the free space shows it): only the rest of the disk claim is added."""
    totals = {"claimed_vcpus": 0, "claimed_memory_mb": 0, "claimed_disk_bytes": 0}
    for rec in open_claims(state_dir):
        claim = rec["claim"]
        if rec.get("status") == "finished":
            continue
        totals["claimed_vcpus"] += int(claim.get("vcpus", 0))
        totals["claimed_memory_mb"] += int(claim.get("memory_mb", 0))
        got = sum(int(r.get("bytes") or 0) for r in received(state_dir, rec["id"]))
        totals["claimed_disk_bytes"] += max(int(claim.get("disk_bytes", 0)) - got, 0)
    return totals


MAINTENANCE_KEYS = ("since", "reason", "drain_id")


def maintenance_path(state_dir):
    return os.path.join(state_dir, "maintenance.json")


def read_maintenance(state_dir):
    """This host's maintenance marker {since, reason, drain_id}, or None. A marker that cannot be
    read still means maintenance (reason says so): a damaged file never makes a host a destination."""
    path = maintenance_path(state_dir)
    if not os.path.lexists(path):
        return None
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        return {"since": None, "reason": "unreadable maintenance marker %s: %s" % (path, exc), "drain_id": None,
                "returning": False}
    data = data if isinstance(data, dict) else {}
    out = {k: data.get(k) if isinstance(data.get(k), str) else None for k in MAINTENANCE_KEYS}
    out["returning"] = data.get("returning") is True
    if out["drain_id"] is not None and not ID_RE.fullmatch(out["drain_id"]):
        out["drain_id"] = None
    return out


def write_maintenance(state_dir, reason, drain_id=None, returning=False, since=None):
    if drain_id is not None:
        check_id(drain_id)
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    marker = {"since": since or record_mod.now(), "reason": reason, "drain_id": drain_id, "returning": bool(returning)}
    _write_json(maintenance_path(state_dir), marker)
    return marker


def set_maintenance(state_dir, state="present", reason="maintenance", drain_id=None, keep_drain_id=False,
                    check=False):
    """Move this host's marker to `state` (present, returning, absent); (changed, before, after).
    present keeps `since` and, with keep_drain_id, a drain id already there (a drain run again);
    returning needs a drain's marker (its way back) and keeps everything else."""
    before = read_maintenance(state_dir)
    if drain_id is not None:
        check_id(drain_id)
    if state == "absent":
        changed = before is not None
        if changed and not check:
            clear_maintenance(state_dir)
        return changed, before, None
    if state == "returning":
        if not (before or {}).get("drain_id"):
            raise ValidationError("this host is not in maintenance from a drain: there is no drain to undo",
                                  hint="playbooks/drain.yml -e host=HOST drains it first")
        after = dict(before, returning=True)
        changed = not before.get("returning")
        if changed and not check:
            after = write_maintenance(state_dir, before.get("reason") or reason, before["drain_id"], returning=True,
                                      since=before.get("since"))
        return changed, before, after
    if state != "present":
        raise ValidationError("maintenance state must be present, returning or absent, got %r" % (state,))
    keep = (before or {}).get("drain_id")
    drain_id = keep if keep and (keep_drain_id or not drain_id) else drain_id
    changed = before is None or before.get("drain_id") != drain_id or before.get("reason") != reason \
        or before.get("returning")
    if not changed:
        return False, before, before
    since = (before or {}).get("since")
    after = {"since": since, "reason": reason, "drain_id": drain_id, "returning": False}
    if not check:
        after = write_maintenance(state_dir, reason, drain_id, since=since)
    return True, before, after


def clear_maintenance(state_dir):
    path = maintenance_path(state_dir)
    if os.path.lexists(path):
        os.unlink(path)
        return True
    return False


def write_file(state_dir, migration_id, name, text, mode=0o600):
    path = os.path.join(migration_dir(state_dir, migration_id), name)
    with open(path, "w") as fh:
        fh.write(text)
    os.chmod(path, mode)
    return path


def received(state_dir, migration_id):
    path = os.path.join(migration_dir(state_dir, migration_id), "received.jsonl")
    out = []
    if os.path.exists(path):
        with open(path) as fh:
            out = [json.loads(line) for line in fh if line.strip()]
    return out


def remove(state_dir, migration_id):
    shutil.rmtree(migration_dir(state_dir, migration_id), ignore_errors=True)
