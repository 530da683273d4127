# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The disk stream: allocated, non-zero extents as frames, then the sha256 of them all. Private.

The format is defined once, in receiver.py (which must stand alone on the destination)."""

from __future__ import annotations

import hashlib
import os

from ..storage import CHUNK, extents
from .receiver import END, FRAME, PART_SUFFIX

__all__ = ["END", "FRAME", "PART_SUFFIX", "frames", "stream_digest"]


def frames(path, size, chunk=CHUNK, readahead=4):
    """Yield the wire frames of a disk: allocated, non-zero data only; the digest comes last.

    The kernel is asked to read `readahead` chunks ahead, so the disk works while we hash and send."""
    digest = hashlib.sha256()
    zero = bytes(chunk)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)  # a disk swapped for a link is never read (S1)
    try:
        for start, length in extents(fd, size):
            pos, end = start, start + length
            while pos < end:
                ahead = pos + chunk
                if ahead < end:
                    os.posix_fadvise(fd, ahead, min(readahead * chunk, end - ahead), os.POSIX_FADV_WILLNEED)
                data = os.pread(fd, min(chunk, end - pos), pos)
                if not data:
                    break
                if data != zero[:len(data)]:
                    head = FRAME.pack(pos, len(data))
                    digest.update(head)
                    digest.update(data)
                    yield head + data
                pos += len(data)
    finally:
        os.close(fd)
    tail = FRAME.pack(END, 0)
    digest.update(tail)
    yield tail + digest.hexdigest().encode("ascii")


def stream_digest(path):
    """sha256 of a disk's wire stream (its allocated, non-zero data), as the receiver checks it."""
    last = b""
    for frame in frames(path, os.stat(path).st_size):
        last = frame
    return last[-64:].decode("ascii")
