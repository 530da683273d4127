# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Disk transfer from source to destination without standing trust. Private to hypervisor.resize.

The controller (the role) makes a one-off key pair for one migration; the destination
(virt_resize_prep) authorizes its public half for root with `restrict,command=...`: the key can do
nothing but run RECEIVER, which writes only the paths listed in the migration's allowed.json. The
source (virt_power_off_migrate) streams the allocated extents of each disk through ssh with that
key; the receiver writes them sparsely to `<path>.hvresize-part`, checks the sha256 of the stream,
then renames. The key is revoked when the
migration finishes, reverts or fails.

Before the source powers the VM off it runs a check session over the same key (op "check"): it
proves the ssh path, the pinned host key and the key work, and asks which destination paths exist
already and how much space is free, so that a bad destination is refused while the VM still runs.

Shared storage: virt_resize_prep leaves a marker `.hvresize-shared-<id>` in each disk directory on
the destination; the source looks for it in the same directory. Found (with this migration's id):
the directory is the same storage on both hosts, so the disk is not sent; the source writes its
acknowledgement into the marker, which the destination reads back before it uses the disk.

Wire format, one ssh session per disk:
  check:  one JSON line {"v": 1, "op": "check", "paths": [...]}; reply {"ok": true, "present": [...],
          "free_bytes": N}
  header: one JSON line {"v": 1, "path": ..., "size": ...}
  frames: 16-byte big-endian (offset, length) then `length` bytes; the end frame has offset 2**64-1
          and length 0, followed by the 64-hex-char sha256 of all frames (headers and data).
  reply:  one JSON line from the receiver: {"ok": true, "sha256": ..., "bytes": ...} or {"ok": false, "error": ...}
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import queue
import re
import shlex
import struct
import subprocess
import threading
import time

from .errors import TransferError, ValidationError
from .storage import CHUNK, extents

FRAME = struct.Struct(">QQ")
END = 2 ** 64 - 1
KEY_TAG = "hvresize-migration:"

RECEIVER = r'''#!/usr/bin/python3
# Receive-only end of a hypervisor.resize disk copy. Written by virt_resize_prep for one
# migration; run by sshd as the forced command of that migration's one-off key.
# The main thread reads frames from stdin; a second thread hashes and writes them, so that reading
# (sshd decrypting), hashing and writing overlap. Writeback starts while the copy runs (fadvise),
# so the final fsync is short and the page cache it uses stays small.
import fcntl, hashlib, json, os, queue, struct, sys, threading
FRAME = struct.Struct(">QQ")
END = 2 ** 64 - 1
FLUSH_EVERY = 64 << 20

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

def check(header, allowed):
    paths = header.get("paths") or []
    bad = [p for p in paths if p not in allowed]
    if bad:
        reply({"ok": False, "error": "path(s) %s are not part of this migration" % ", ".join(bad)}, 3)
    present = [p for p in paths if os.path.lexists(p)]
    free = {}
    for p in paths:
        try:
            st = os.statvfs(os.path.dirname(p))
        except OSError as exc:
            reply({"ok": False, "error": "directory of %s: %s" % (p, exc)}, 3)
        free[os.path.dirname(p)] = st.f_bavail * st.f_frsize
    reply({"ok": True, "present": present, "free_bytes": free}, 0)

def read_header(fd):
    line = bytearray()
    while not line.endswith(b"\n"):
        b = os.read(fd, 1)
        if not b:
            raise EOFError("no header")
        line += b
    return json.loads(line.decode("utf-8"))

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

def main():
    mdir = sys.argv[1]
    fd_in = sys.stdin.fileno()
    try:
        fcntl.fcntl(fd_in, 1031, 1 << 20)  # F_SETPIPE_SZ: let sshd run ahead of us
    except OSError:
        pass
    header = read_header(fd_in)
    with open(os.path.join(mdir, "allowed.json")) as fh:
        allowed = json.load(fh)
    if header.get("op") == "check":
        # The check may name every disk of the migration, also those already here (paths.json).
        known = os.path.join(mdir, "paths.json")
        if os.path.exists(known):
            with open(known) as fh:
                allowed = allowed + json.load(fh)
        check(header, allowed)
    path = header["path"]
    if path not in allowed:
        reply({"ok": False, "error": "path %s is not part of this migration" % path}, 3)
    if os.path.lexists(path):
        reply({"ok": False, "error": "%s already exists on the destination" % path}, 3)
    part = path + ".hvresize-part"
    digest = hashlib.sha256()
    state = {"bytes": 0, "error": None}
    chunk = 4 << 20
    free = queue.Queue()
    for _i in range(4):
        free.put(bytearray(chunk))
    work = queue.Queue()
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    thread = threading.Thread(target=writer, args=(fd, work, free, digest, state), daemon=True)
    thread.start()
    try:
        os.ftruncate(fd, int(header["size"]))
        head = bytearray(FRAME.size)
        while True:
            read_into(fd_in, memoryview(head))
            offset, length = FRAME.unpack(head)
            if offset == END:
                work.put((bytes(head), 0, None, 0))
                break
            left = length
            while left:
                n = min(left, chunk)
                buf = None
                while buf is None:
                    try:
                        buf = free.get(timeout=1)
                    except queue.Empty:
                        if state["error"]:
                            raise state["error"]
                read_into(fd_in, memoryview(buf)[:n])
                work.put((bytes(head) if left == length else b"", offset + length - left, buf, n))
                left -= n
        expected = bytes(read_into(fd_in, memoryview(bytearray(64)))).decode("ascii")
        work.put(None)
        thread.join()
        if state["error"]:
            raise state["error"]
        os.fsync(fd)
    except Exception as exc:
        os.close(fd)
        os.unlink(part)
        reply({"ok": False, "error": "receive failed: %s" % exc}, 4)
    os.close(fd)
    if expected != digest.hexdigest():
        os.unlink(part)
        reply({"ok": False, "error": "checksum mismatch: sent %s, received %s" % (expected, digest.hexdigest())}, 5)
    os.rename(part, path)
    with open(os.path.join(mdir, "received.jsonl"), "a") as fh:
        fh.write(json.dumps({"path": path, "sha256": expected, "bytes": state["bytes"]}) + "\n")
    reply({"ok": True, "sha256": expected, "bytes": state["bytes"]}, 0)

main()
'''


def check_public_key(line):
    parts = (line or "").split()
    if len(parts) < 2 or parts[0] not in ("ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa") \
            or not re.match(r"^[A-Za-z0-9+/=]+$", parts[1]):
        raise ValidationError("transfer_public_key is not an ssh public key line (type base64 [comment])")
    return parts[0] + " " + parts[1]


def read_host_key(path):
    try:
        with open(path) as fh:
            return check_public_key(fh.read())
    except (OSError, ValidationError) as exc:
        raise ValidationError("cannot read this host's ssh host public key at %s: %s" % (path, exc),
                              hint="set ssh_host_key to the .pub file of the key sshd uses")


def authorized_line(public_key, migration_dir, migration_id, python="/usr/bin/python3"):
    command = "%s %s %s" % (python, shlex.quote(os.path.join(migration_dir, "receive.py")),
                            shlex.quote(migration_dir))
    return 'restrict,command="%s" %s %s%s' % (command, check_public_key(public_key), KEY_TAG, migration_id)


def edit_authorized_keys(path, add=None, remove_id=None):
    """Add a line and/or remove the lines of one migration; returns True when the file changed.

    Under a lock of its own: migrations to the same host add and revoke keys concurrently."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(path + ".hvresize-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _edit_authorized_keys(path, add, remove_id)


def _edit_authorized_keys(path, add, remove_id):
    lines = []
    if os.path.exists(path):
        with open(path) as fh:
            lines = fh.read().splitlines()
    new = [ln for ln in lines if not (remove_id and ln.endswith(" " + KEY_TAG + remove_id))]
    if add and add not in new:
        new.append(add)
    if new == lines:
        return False
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = path + ".hvresize-tmp"
    with open(tmp, "w") as fh:
        fh.write("\n".join(new) + ("\n" if new else ""))
    os.chmod(tmp, 0o600)
    os.rename(tmp, path)
    return True


def has_key(path, migration_id):
    if not os.path.exists(path):
        return False
    with open(path) as fh:
        return any(ln.rstrip().endswith(" " + KEY_TAG + migration_id) for ln in fh)


def frames(path, size, chunk=CHUNK, readahead=4):
    """Yield the wire frames of a disk: allocated, non-zero data only; the digest comes last.

    The kernel is asked to read `readahead` chunks ahead, so the disk works while we hash and send."""
    digest = hashlib.sha256()
    zero = bytes(chunk)
    fd = os.open(path, os.O_RDONLY)
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


class Throttle:
    """Keep the average rate at or under `limit` bytes per second (0: no limit). Clock injectable."""

    def __init__(self, limit, clock=time.monotonic, sleep=time.sleep):
        self.limit, self.clock, self.sleep = int(limit or 0), clock, sleep
        self.started = clock()
        self.done = 0

    def __call__(self, nbytes):
        self.done += nbytes
        if self.limit <= 0:
            return 0.0
        ahead = self.done / float(self.limit) - (self.clock() - self.started)
        if ahead > 0:
            self.sleep(ahead)
            return ahead
        return 0.0


F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class ReadAhead:
    """frames() in a thread, a few frames ahead of the writer: reading and hashing (both release
    the GIL) overlap with ssh taking the previous frame. Bounded: at most `depth` frames wait."""

    def __init__(self, path, size, depth=3):
        self.queue = queue.Queue(maxsize=depth)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(path, size), daemon=True)
        self.thread.start()

    def _put(self, item):
        while not self.stopping.is_set():
            try:
                self.queue.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, path, size):
        try:
            for frame in frames(path, size):
                if not self._put(("frame", frame)):
                    return
            self._put(("end", None))
        except Exception as exc:  # handed to the consumer, raised there
            self._put(("error", exc))

    def __iter__(self):
        while True:
            kind, item = self.queue.get()
            if kind == "frame":
                yield item
            elif kind == "end":
                return
            else:
                raise TransferError("reading the disk failed: %s" % item)

    def stop(self):
        self.stopping.set()
        self.thread.join(timeout=5)


def send(path, argv, progress=None, dest_path=None, bandwidth_limit=0):
    """Stream one disk into `argv` (ssh ... or a local receiver); returns the receiver's reply.

    dest_path: where the receiver writes it (default: the same path, as on every hypervisor).
    progress: called with the bytes of disk data sent so far, after every frame.
    bandwidth_limit: bytes per second on the wire, on average (0: as fast as it goes).
    """
    size = os.stat(path).st_size
    started = time.monotonic()
    throttle = Throttle(bandwidth_limit)
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        fcntl.fcntl(proc.stdin.fileno(), F_SETPIPE_SZ, 1 << 20)  # let us run ahead of ssh
    except (OSError, AttributeError):
        pass
    sent = 0
    data = 0
    reader = ReadAhead(path, size)
    try:
        proc.stdin.write((json.dumps({"v": 1, "path": dest_path or path, "size": size}) + "\n").encode("utf-8"))
        for frame in reader:
            proc.stdin.write(frame)
            sent += len(frame)
            if FRAME.unpack_from(frame)[0] != END:
                data += len(frame) - FRAME.size
            throttle(len(frame))
            if progress is not None:
                progress(data)
    except BrokenPipeError:
        pass  # the receiver stopped reading; its reply says why
    finally:
        reader.stop()
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        proc.stdin = None
    out, err = proc.communicate()
    reply = None
    for line in out.decode("utf-8", "replace").splitlines():
        if line.startswith("{"):
            reply = json.loads(line)
    if proc.returncode != 0 or not reply or not reply.get("ok"):
        reason = (reply or {}).get("error") or err.decode("utf-8", "replace").strip() or "no reply"
        raise TransferError("copy of %s failed: %s" % (path, reason),
                            details={"rc": proc.returncode, "wire_bytes": sent})
    reply["wire_bytes"] = sent
    reply["seconds"] = round(time.monotonic() - started, 3)
    reply["path"] = path
    reply["size"] = size
    return reply


def preflight(argv, paths):
    """Ask the destination's receiver which of `paths` exist and how much room there is.

    Run before the VM is powered off: a broken ssh path, a wrong host key or a stale file on the
    destination then fails the resize while the VM still runs."""
    try:
        proc = subprocess.run(argv, input=(json.dumps({"v": 1, "op": "check", "paths": paths}) + "\n").encode(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TransferError("cannot reach the destination's receiver: %s" % exc)
    reply = None
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        if line.startswith("{"):
            reply = json.loads(line)
    if proc.returncode != 0 or not reply or not reply.get("ok"):
        reason = (reply or {}).get("error") or proc.stderr.decode("utf-8", "replace").strip() or "no reply"
        raise TransferError("the destination refused the copy check: %s" % reason,
                            hint="the ssh path to the destination, its host key and the one-off key must work",
                            details={"rc": proc.returncode})
    return reply


def ssh_argv(dest, port, key_file, known_hosts_file, user="root", cipher="aes128-gcm@openssh.com",
             compress=False):
    argv = ["ssh", "-T", "-i", key_file, "-p", str(port),
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", "UserKnownHostsFile=%s" % known_hosts_file, "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=15",
            "-o", "Compression=%s" % ("yes" if compress else "no")]
    if cipher:
        argv += ["-c", cipher]
    return argv + ["%s@%s" % (user, dest), "receive"]


class Progress:
    """The copy's progress as a small JSON file, rewritten at most every `every` seconds, for the
    role's wait task (virt_migrate_wait) to read while the copy runs. Removed by close()."""

    def __init__(self, path, disks, every=1.0, clock=time.monotonic, wall=time.time):
        self.path, self.every, self.clock, self.wall = path, every, clock, wall
        self.total = sum(int(d.get("allocation") or 0) for d in disks)
        self.disks = len(disks)
        self.started = clock()
        self.base = 0      # data bytes of the disks already done
        self.current = 0   # data bytes of the disk in flight
        self.index = 0
        self.disk = None
        self.phase = "starting"
        self.copying = False
        self.last = None
        if path:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)

    def state(self):
        done = self.base + self.current
        elapsed = max(self.clock() - self.started, 1e-6)
        rate = done / elapsed if self.phase == "copying" else 0.0
        total = max(self.total, done)
        eta = (total - done) / rate if rate > 0 else None
        return {"phase": self.phase, "disk": self.disk, "disk_index": self.index, "disks": self.disks,
                "bytes_done": done, "bytes_total": total,
                "percent": round(100.0 * done / total, 1) if total else 100.0,
                "rate_bytes_per_s": int(rate), "eta_seconds": None if eta is None else round(eta, 1),
                "elapsed_seconds": round(elapsed, 1), "updated": self.wall()}

    def write(self, force=False):
        now = self.clock()
        if not self.path or (not force and self.last is not None and now - self.last < self.every):
            return
        self.last = now
        tmp = self.path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(self.state(), fh)
        os.replace(tmp, self.path)

    def set_phase(self, phase, disk=None):
        if phase == "copying" and not self.copying:
            self.copying = True
            self.started = self.clock()  # the rate counts copy time, not the shutdown
        self.phase = phase
        if disk is not None:
            self.disk = disk
        self.write(force=True)

    def next_disk(self, path):
        self.base += self.current
        self.current = 0
        self.index += 1
        self.disk = path
        self.write(force=True)

    def update(self, data_bytes):
        self.current = data_bytes
        self.write()

    def close(self):
        if self.path:
            for p in (self.path, self.path + ".tmp"):
                if os.path.exists(p):
                    os.unlink(p)


SHARED_MARKER = ".hvresize-shared-"


def marker_path(disk_path, migration_id):
    return os.path.join(os.path.dirname(disk_path), SHARED_MARKER + migration_id)


def make_marker(directory, migration_id, host):
    """Destination side: leave this migration's marker in a disk directory (never overwrites)."""
    path = os.path.join(directory, SHARED_MARKER + migration_id)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"migration": migration_id, "made_by": host}, fh)
    return path


def read_marker(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


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
        with open(tmp, "w") as fh:
            json.dump(mark, fh)
        os.replace(tmp, path)
    return True


BACKUP_SUFFIX = ".hvresize-backup"


def stream_digest(path):
    """sha256 of a disk's wire stream (its allocated, non-zero data), as the receiver checks it."""
    last = b""
    for frame in frames(path, os.stat(path).st_size):
        last = frame
    return last[-64:].decode("ascii")


def local_copy(src, dst):
    """Sparse, verified copy on the same host (the backup of a same-host resize); never overwrites."""
    st = os.stat(src)
    started = time.monotonic()
    part = dst + ".hvresize-part"
    digest = None
    data_bytes = 0
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
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
    if os.path.lexists(dst):
        os.unlink(part)
        raise TransferError("%s already exists; refusing to overwrite it" % dst)
    os.rename(part, dst)
    return {"path": src, "backup": dst, "sha256": digest, "bytes": data_bytes, "size": st.st_size,
            "wire_bytes": 0, "seconds": round(time.monotonic() - started, 3)}
