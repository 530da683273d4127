# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A host's migration directory: records and claims as JSON, under one lock. Private.

<state_dir>/lock                        flock held while claims are read and written
<state_dir>/migrations/<id>/record.json the record (with the claim: vcpus, memory_mb, disk_bytes)
<state_dir>/migrations/<id>/allowed.json paths the receiver may create
<state_dir>/migrations/<id>/receive.py  the receive-only script of this migration
<state_dir>/migrations/<id>/received.jsonl files received (path, sha256, bytes)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil

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
