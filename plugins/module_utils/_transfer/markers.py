# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared-storage markers. Private to hypervisor.resize.

virt_resize_prep leaves `.hvresize-shared-<id>` in each disk directory on the destination; the
source looks for it in the same directory. Found (with this migration's id): the directory is the
same storage on both hosts, so the disk is not sent; the source writes its acknowledgement into the
marker, which the destination reads back before it uses the disk.

Anyone who can write the directory (the other host, an NFS peer) may plant files there, so markers
are read only as regular files opened with O_NOFOLLOW, and written only to names created with
O_EXCL|O_NOFOLLOW (docs/security.md S1): a link planted at either name is never followed.
"""

from __future__ import annotations

import json
import os
import stat

from ..errors import TransferError

SHARED_MARKER = ".hvresize-shared-"
MAX_MARKER = 4096


def marker_path(disk_path, migration_id):
    return os.path.join(os.path.dirname(disk_path), SHARED_MARKER + migration_id)


def _write_new(path, obj):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh)


def make_marker(directory, migration_id, host):
    """Destination side: leave this migration's marker in a disk directory (never overwrites)."""
    path = os.path.join(directory, SHARED_MARKER + migration_id)
    _write_new(path, {"migration": migration_id, "made_by": host})
    return path


def read_marker(path):
    """The marker's JSON if `path` is a regular file (not a link), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, MAX_MARKER + 1)
    finally:
        os.close(fd)
    try:
        mark = json.loads(data.decode("utf-8")) if len(data) <= MAX_MARKER else None
    except ValueError:
        return None
    return mark if isinstance(mark, dict) else None


def ack_marker(disk_path, migration_id, host):
    """Source side: True if the directory of `disk_path` holds this migration's marker, i.e. it is
    the destination's storage too; the acknowledgement goes into the marker for the destination."""
    path = marker_path(disk_path, migration_id)
    mark = read_marker(path)
    if not mark or mark.get("migration") != migration_id:
        return False
    if mark.get("seen_by") != host:
        mark["seen_by"] = host
        tmp = path + ".tmp"
        try:
            _write_new(tmp, mark)
        except FileExistsError:
            raise TransferError("%s is in the way; it was left as it is" % tmp,
                                hint="remove it if no resize of this VM is running")
        os.replace(tmp, path)
    return True


def remove_markers(paths):
    """Delete markers (and a half-written acknowledgement) named in a record; links are removed,
    never followed."""
    removed = []
    for path in paths or []:
        for p in (path, path + ".tmp"):
            if os.path.lexists(p):
                os.unlink(p)
                removed.append(p)
    return removed
