# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Receive-only end of a disk copy. Private to hypervisor.resize.

virt_resize_prep writes this file (its own source, unchanged) into the migration's directory on the
destination; sshd runs it as the forced command of that migration's one-off key:
`python3 <mdir>/receive.py <mdir>`. It imports nothing but the standard library.

The source is not trusted (docs/security.md, rules R1 and R2):
  R1  it writes only the paths listed in <mdir>/allowed.json (which prep checked against the storage
      roots), through a descriptor of each directory opened component by component with O_NOFOLLOW;
      the part file is created with O_EXCL|O_NOFOLLOW, so nothing planted there is followed or
      reused; the finished file is linked into place (link() fails if the name exists: it never
      replaces anything) and only then is the part name removed.
  R2  it bounds what it reads: a header line of at most MAX_HEADER bytes, a declared size no larger
      than prep allowed for that path (from the disk's virtual size), frames in increasing order
      inside the declared size, each at most MAX_FRAME bytes.
The sha256 of the stream (headers and data) is computed over the very buffers that are written,
and the file is fsync'ed before it is linked into place: what is on disk is what was hashed.

Wire format, one ssh session per request:
  check:  {"v": 1, "op": "check", "paths": [...]} -> {"ok": true, "present": [...], "parts": [...],
          "free_bytes": {dir: n}}
  copy:   {"v": 1, "path": ..., "size": n} then frames: 16-byte big-endian (offset, length) and
          `length` bytes; the end frame has offset 2**64-1 and length 0, followed by the 64 hex
          characters of the sha256 of all frames. Reply {"ok": true, "sha256": ..., "bytes": n} or
          {"ok": false, "error": ...}.
"""

import errno
import fcntl
import hashlib
import json
import os
import queue
import struct
import sys
import threading

FRAME = struct.Struct(">QQ")
END = 2 ** 64 - 1
MAX_HEADER = 64 * 1024
MAX_FRAME = 64 * 1024 * 1024
MAX_CHECK_PATHS = 1024
PART_SUFFIX = ".hvresize-part"
BUFFER = 4 << 20
FLUSH_EVERY = 64 << 20
F_SETPIPE_SZ = 1031


class Refused(Exception):
    """The request breaks a rule; nothing was written."""


def reply(obj, code):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
    os._exit(code)


def read_into(fd, view):
    got = 0
    while got < len(view):
        n = os.readv(fd, [view[got:]])
        if not n:
            raise EOFError("stream ended early")
        got += n
    return view


def read_header(fd):
    """One JSON line of at most MAX_HEADER bytes (R2)."""
    line = bytearray()
    while not line.endswith(b"\n"):
        if len(line) >= MAX_HEADER:
            raise Refused("header longer than %d bytes" % MAX_HEADER)
        b = os.read(fd, 1)
        if not b:
            raise Refused("no header")
        line += b
    try:
        header = json.loads(line.decode("utf-8"))
    except ValueError:
        raise Refused("header is not JSON")
    if not isinstance(header, dict):
        raise Refused("header is not a JSON object")
    return header


def load_json(path, default):
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return default


def open_dir(path):
    """A descriptor of directory `path`, opened from / one component at a time without following
    any symbolic link (R1). Raises Refused if a component is a link or not a directory."""
    if not isinstance(path, str) or not path.startswith("/") or os.path.normpath(path) != path:
        raise Refused("%r is not a normalized absolute path" % (path,))
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
    try:
        for comp in [c for c in path.split("/") if c]:
            try:
                nfd = os.open(comp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise Refused("%s: a component is a symbolic link or not a directory" % path)
                raise
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def _lexists(dfd, name):
    try:
        os.lstat(name, dir_fd=dfd)
        return True
    except FileNotFoundError:
        return False


def check(header, known):
    """Which of the paths exist (or have a part file in the way), and the room in their directories."""
    paths = header.get("paths")
    if not isinstance(paths, list) or len(paths) > MAX_CHECK_PATHS:
        raise Refused("paths must be a list of at most %d paths" % MAX_CHECK_PATHS)
    bad = [p for p in paths if p not in known]
    if bad:
        raise Refused("path(s) %s are not part of this migration" % ", ".join(map(str, bad)))
    present, parts, free = [], [], {}
    for p in paths:
        directory, name = os.path.split(p)
        try:
            dfd = open_dir(directory)
        except OSError as exc:
            raise Refused("directory of %s: %s" % (p, exc.strerror))
        try:
            if _lexists(dfd, name):
                present.append(p)
            if _lexists(dfd, name + PART_SUFFIX):
                parts.append(p + PART_SUFFIX)
            st = os.fstatvfs(dfd)
            free[directory] = st.f_bavail * st.f_frsize
        finally:
            os.close(dfd)
    return {"ok": True, "present": present, "parts": parts, "free_bytes": free}


def writer(fd, work, free, digest, state):
    flushed = 0
    try:
        while True:
            item = work.get()
            if item is None:
                return
            head, offset, buf, length = item
            digest.update(head)
            if length:
                view = memoryview(buf)[:length]
                digest.update(view)
                done = 0
                while done < length:
                    done += os.pwrite(fd, view[done:], offset + done)
                state["bytes"] += length
                free.put(buf)
                if state["bytes"] - flushed >= FLUSH_EVERY:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # start writeback now
                    flushed = state["bytes"]
    except Exception as exc:  # reported by the main thread
        state["error"] = exc


def _raise_from(state):
    """Raise the writer thread's error, if it had one."""
    error = state["error"]
    if error is not None:
        raise error


def stream_into(fd_in, fd, size):
    """Read frames from fd_in and write them into fd (R2 bounds); returns (sha256 hex sent,
    sha256 hex received, data bytes)."""
    digest = hashlib.sha256()
    state = {"bytes": 0, "error": None}
    free: queue.Queue = queue.Queue()
    for _i in range(4):
        free.put(bytearray(BUFFER))
    work: queue.Queue = queue.Queue()
    thread = threading.Thread(target=writer, args=(fd, work, free, digest, state), daemon=True)
    thread.start()
    try:
        os.ftruncate(fd, size)
        head = bytearray(FRAME.size)
        next_free = 0  # frames come in increasing order, without overlap, inside the declared size
        while True:
            read_into(fd_in, memoryview(head))
            offset, length = FRAME.unpack(head)
            if offset == END:
                if length:
                    raise Refused("malformed end frame")
                work.put((bytes(head), 0, None, 0))
                break
            if length == 0 or length > MAX_FRAME or offset < next_free or offset + length > size:
                raise Refused("frame (%d, %d) is outside the declared size %d or out of order"
                              % (offset, length, size))
            next_free = offset + length
            left = length
            while left:
                n = min(left, BUFFER)
                buf = None
                while buf is None:
                    try:
                        buf = free.get(timeout=1)
                    except queue.Empty:
                        _raise_from(state)
                read_into(fd_in, memoryview(buf)[:n])
                work.put((bytes(head) if left == length else b"", offset + length - left, buf, n))
                left -= n
        expected = bytes(read_into(fd_in, memoryview(bytearray(64)))).decode("ascii", "replace")
    finally:
        work.put(None)
        thread.join()
    _raise_from(state)
    os.fsync(fd)
    return expected, digest.hexdigest(), state["bytes"]


def receive(fd_in, header, allowed, mdir):
    path = header.get("path")
    spec = allowed.get(path) if isinstance(path, str) else None
    if spec is None:
        raise Refused("path %s is not part of this migration" % (path,))
    size = header.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= int(spec["max_size"]):
        raise Refused("declared size %r of %s is more than this migration allows (%d bytes)"
                      % (size, path, int(spec["max_size"])))
    lock = os.open(os.path.join(mdir, "receive.lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # revert waits for no one: it refuses while we run
    except BlockingIOError:
        raise Refused("this migration is being reverted or received by another session")
    # allowed.json again, under the lock: a revert that ran before us has removed it.
    if load_json(os.path.join(mdir, "allowed.json"), {}).get(path) != spec:
        raise Refused("path %s is no longer part of this migration" % path)
    directory, name = os.path.split(path)
    part = name + PART_SUFFIX
    dfd = open_dir(directory)
    try:
        if _lexists(dfd, name):
            raise Refused("%s already exists on the destination" % path)
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=dfd)
        except FileExistsError:
            raise Refused("%s%s is in the way on the destination; it was left as it is" % (path, PART_SUFFIX))
        try:
            try:
                expected, got, nbytes = stream_into(fd_in, fd, size)
            finally:
                os.close(fd)
            if expected != got:
                raise Refused("checksum mismatch: sent %s, received %s" % (expected, got))
            os.link(part, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)  # never replaces
        except BaseException:
            os.unlink(part, dir_fd=dfd)
            raise
        os.unlink(part, dir_fd=dfd)
        os.fsync(dfd)
    finally:
        os.close(dfd)
    with open(os.path.join(mdir, "received.jsonl"), "a") as fh:
        fh.write(json.dumps({"path": path, "sha256": got, "bytes": nbytes}) + "\n")
    return {"ok": True, "sha256": got, "bytes": nbytes}


def main(argv=None, fd_in=None):
    argv = sys.argv if argv is None else argv
    mdir = argv[1]
    fd_in = sys.stdin.fileno() if fd_in is None else fd_in
    try:
        fcntl.fcntl(fd_in, F_SETPIPE_SZ, 1 << 20)  # let sshd run ahead of us
    except OSError:
        pass
    try:
        header = read_header(fd_in)
        allowed = load_json(os.path.join(mdir, "allowed.json"), {})
        if header.get("op") == "check":
            # The check may name every disk of the migration, also those already here (paths.json).
            known = set(allowed) | set(load_json(os.path.join(mdir, "paths.json"), []))
            reply(check(header, known), 0)
        reply(receive(fd_in, header, allowed, mdir), 0)
    except Refused as exc:
        reply({"ok": False, "error": str(exc)}, 3)
    except Exception as exc:
        reply({"ok": False, "error": "receive failed: %s" % exc}, 4)


if __name__ == "__main__":
    main()
