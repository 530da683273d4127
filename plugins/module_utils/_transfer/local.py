# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verified sparse copies on one host: the backup beside a disk. Private to hypervisor.resize."""

from __future__ import annotations

import os
import stat
import time

from ..errors import TransferError
from .receiver import Refused, open_dir
from .wire import END, FRAME, PART_SUFFIX, frames, stream_digest

BACKUP_SUFFIX = ".hvresize-backup"


def is_regular(path):
    """True if `path` itself (not what a link points at) is a regular file."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def safe_unlink(path):
    """Remove `path` itself, reaching its directory without following any link (a directory that
    someone swapped for a link to /etc is never entered: S1/R1)."""
    directory, name = os.path.split(path)
    try:
        fd = open_dir(directory)
    except Refused as exc:
        raise TransferError("not removing %s: %s" % (path, exc))
    try:
        os.unlink(name, dir_fd=fd)
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)


def local_copy(src, dst):
    """Sparse, verified copy on the same host (a backup beside a disk); never overwrites, never
    follows a link planted at the destination names (the directory may be shared storage)."""
    st = os.lstat(src)
    if not stat.S_ISREG(st.st_mode):
        raise TransferError("%s is not a regular file (a link or a device); refusing to copy it" % src)
    started = time.monotonic()
    part = dst + PART_SUFFIX
    digest = None
    data_bytes = 0
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise TransferError("%s is in the way; it was left as it is" % part,
                            hint="remove it if no resize of this VM is running")
    try:
        os.ftruncate(fd, st.st_size)
        for frame in frames(src, st.st_size):
            offset, length = FRAME.unpack(frame[:FRAME.size])
            if offset == END:
                digest = frame[FRAME.size:].decode("ascii")
                break
            os.pwrite(fd, frame[FRAME.size:], offset)
            data_bytes += length
        os.fsync(fd)
        os.fchown(fd, st.st_uid, st.st_gid)
        os.fchmod(fd, st.st_mode & 0o7777)
    except OSError as exc:
        os.close(fd)
        os.unlink(part)
        raise TransferError("backup copy of %s failed: %s" % (src, exc))
    os.close(fd)
    if stream_digest(part) != digest:
        os.unlink(part)
        raise TransferError("backup copy of %s does not match its source" % src)
    try:
        os.link(part, dst)  # fails if anything is at dst: never replaces
    except FileExistsError:
        raise TransferError("%s already exists; refusing to overwrite it" % dst)
    finally:
        os.unlink(part)
    return {"path": src, "backup": dst, "sha256": digest, "bytes": data_bytes, "size": st.st_size,
            "wire_bytes": 0, "seconds": round(time.monotonic() - started, 3)}
