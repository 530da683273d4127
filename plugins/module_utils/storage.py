# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Disk images: qemu-img info/resize, allocated extents, free space. Private to hypervisor.resize."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile

from .errors import ResizeError

CHUNK = 4 * 1024 * 1024


def _run(argv, what):
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    except OSError as exc:
        raise ResizeError("cannot run %s: %s" % (argv[0], exc), hint="install qemu-utils")
    if proc.returncode != 0:
        raise ResizeError("%s failed: %s" % (what, proc.stderr.decode("utf-8", "replace").strip()),
                          details={"argv": argv, "rc": proc.returncode})
    return proc.stdout.decode("utf-8", "replace")


def run(argv, what):
    """Run a qemu-img (or other) command; ResizeError with its stderr if it fails."""
    return _run(argv, what)


def image_info(path, fmt):
    """virtual_size, allocation (bytes on disk), format, backing file and external data file of an
    image, read as the format its domain declares (never probed: docs/security.md S2)."""
    if not fmt or not str(fmt).replace("_", "").isalnum():
        raise ResizeError("disk %s has no usable format (%r) in its definition" % (path, fmt))
    info = json.loads(_run(["qemu-img", "info", "-f", fmt, "--force-share", "--output=json", path],
                           "qemu-img info %s" % path))
    st = os.stat(path)
    data = ((info.get("format-specific") or {}).get("data") or {})
    return {
        "path": path,
        "format": info.get("format"),
        "virtual_size": int(info.get("virtual-size", 0)),
        "file_size": st.st_size,
        "allocation": st.st_blocks * 512,
        "backing_file": info.get("full-backing-filename") or info.get("backing-filename"),
        "data_file": data.get("data-file"),
    }


def image_refs_problem(path, fmt):
    """R3: None if the image, read as `fmt` (never probed), names no other file; else why not."""
    info = image_info(path, fmt)
    for key in ("backing_file", "data_file"):
        if info.get(key):
            return "names a %s (%s) inside the image" % (key.replace("_", " "), info[key])
    return None


def grow(path, fmt, new_size):
    """Grow an image to new_size bytes; never shrinks. Returns True when it changed."""
    cur = image_info(path, fmt)["virtual_size"]
    if new_size <= cur:
        return False
    _run(["qemu-img", "resize", "-f", fmt, path, str(new_size)], "qemu-img resize %s" % path)
    return True


def recreate(path, fmt, size):
    """Replace an image by a blank one of `size` bytes (swap: its contents are disposable)."""
    st = os.lstat(path)
    # A name of our own making, created exclusively: nothing planted beside the disk is followed.
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".hvresize-new-", dir=os.path.dirname(path))
    try:
        _run(["qemu-img", "create", "-q", "-f", fmt, tmp, str(size)], "qemu-img create %s" % tmp)
        os.fchown(fd, st.st_uid, st.st_gid)
        os.fchmod(fd, st.st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)


def free_bytes(path):
    """Free space for new files at `path` (or its nearest existing parent)."""
    while path and not os.path.exists(path):
        path = os.path.dirname(path)
    st = os.statvfs(path or "/")
    return st.f_bavail * st.f_frsize


def extents(fd, size):
    """Yield (offset, length) of the allocated data of an open file, via SEEK_DATA/SEEK_HOLE."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError:  # ENXIO: no data after offset
            return
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, min(end, size) - start
        offset = end
