# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The source's side of a copy: the ssh command line, the check before the power-off, the stream.

The destination is not trusted (docs/security.md): its address, port, user and host key reach the
ssh command line only through _policy's checks (T1-T3); ssh reads no configuration file (-F
/dev/null) and the destination comes after `--`; what the receiver replies is believed only where
the source can check it (the checksum must be the one the source computed), and is otherwise
reported as text. Private to hypervisor.resize.
"""

from __future__ import annotations

import fcntl
import json
import os
import queue
import re
import stat
import subprocess
import threading
import time

from .. import _policy
from ..errors import TransferError
from .wire import END, FRAME, frames

F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
MAX_REPLY = 64 * 1024
HEX64 = re.compile(r"^[0-9a-f]{64}$")


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


def _reply(out):
    """The receiver's last JSON line, as a dict, or None. Text only: never a path or a command."""
    reply = None
    for line in out[-MAX_REPLY:].decode("utf-8", "replace").splitlines():
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            reply = value if isinstance(value, dict) else None
    return reply


def _reason(reply, err):
    text = (reply or {}).get("error") if isinstance((reply or {}).get("error"), str) else None
    return (text or err.decode("utf-8", "replace").strip() or "no reply")[:2000]


def send(path, argv, progress=None, dest_path=None, bandwidth_limit=0, size=None):
    """Stream one disk into `argv` (ssh ... or a local receiver); returns what was sent and verified.

    dest_path: where the receiver writes it (default: the same path, as on every hypervisor).
    size: the size to declare (default: the file's size); the receiver refuses a size beyond what
    the destination's prep allowed for that path.
    progress: called with the bytes of disk data sent so far, after every frame.
    bandwidth_limit: bytes per second on the wire, on average (0: as fast as it goes).
    """
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise TransferError("%s is not a regular file (a link or a device); refusing to send it" % path)
    size = st.st_size if size is None else int(size)
    started = time.monotonic()
    throttle = Throttle(bandwidth_limit)
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        fcntl.fcntl(proc.stdin.fileno(), F_SETPIPE_SZ, 1 << 20)  # let us run ahead of ssh
    except (OSError, AttributeError):
        pass
    sent = 0
    data = 0
    digest = None
    reader = ReadAhead(path, size)
    try:
        proc.stdin.write((json.dumps({"v": 1, "path": dest_path or path, "size": size}) + "\n").encode("utf-8"))
        for frame in reader:
            proc.stdin.write(frame)
            sent += len(frame)
            if FRAME.unpack_from(frame)[0] != END:
                data += len(frame) - FRAME.size
            else:
                digest = frame[FRAME.size:].decode("ascii")
            throttle(len(frame))
            if progress is not None:
                progress(data)
    except BrokenPipeError:
        pass  # the receiver stopped reading; its reply says why
    except BaseException:
        proc.kill()  # stopped from here (the progress callback): the receiver drops its part file
        proc.wait()
        raise
    finally:
        reader.stop()
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        proc.stdin = None
    out, err = proc.communicate()
    reply = _reply(out)
    if proc.returncode != 0 or not reply or reply.get("ok") is not True:
        raise TransferError("copy of %s failed: %s" % (path, _reason(reply, err)),
                            details={"rc": proc.returncode, "wire_bytes": sent})
    if digest is None or reply.get("sha256") != digest or reply.get("bytes") != data:
        raise TransferError("copy of %s: the destination reports %r (%r bytes), this host sent %s (%d bytes)"
                            % (path, str(reply.get("sha256"))[:80], reply.get("bytes"), digest, data),
                            details={"wire_bytes": sent})
    return {"path": path, "size": size, "sha256": digest, "bytes": data, "wire_bytes": sent,
            "seconds": round(time.monotonic() - started, 3)}


def preflight(argv, paths):
    """Ask the destination's receiver which of `paths` exist (or have a part file in the way) and
    how much room there is. Run before the VM is powered off: a broken ssh path, a wrong host key
    or a stale file on the destination then fails the resize while the VM still runs.

    Returns {"present": [paths among ours], "parts": [...], "free_bytes": {dir: int}}."""
    try:
        proc = subprocess.run(argv, input=(json.dumps({"v": 1, "op": "check", "paths": paths}) + "\n").encode(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TransferError("cannot reach the destination's receiver: %s" % exc)
    reply = _reply(proc.stdout)
    if proc.returncode != 0 or not reply or reply.get("ok") is not True:
        raise TransferError("the destination refused the copy check: %s" % _reason(reply, proc.stderr),
                            hint="the ssh path to the destination, its host key and the one-off key must work",
                            details={"rc": proc.returncode})
    ours = set(paths)
    free = reply.get("free_bytes") if isinstance(reply.get("free_bytes"), dict) else {}
    return {"present": [p for p in reply.get("present") or [] if p in ours],
            "parts": [p for p in reply.get("parts") or [] if isinstance(p, str) and p[:-len(".hvresize-part")] in ours],
            "free_bytes": {k: v for k, v in free.items() if isinstance(v, int) and not isinstance(v, bool)}}


def ssh_argv(dest, port, key_file, known_hosts_file, user="root", cipher="aes128-gcm@openssh.com",
             compress=False):
    """T1/T3: ssh that reads no configuration file, takes only validated values, and names the
    destination after `--`."""
    argv = ["ssh", "-F", "/dev/null", "-T", "-i", key_file, "-p", str(_policy.check_port(port)),
            "-l", _policy.check_transfer_user(user),
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", "UserKnownHostsFile=%s" % known_hosts_file, "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=15", "-o", "ProxyCommand=none",
            "-o", "Compression=%s" % ("yes" if compress else "no")]
    cipher = _policy.check_cipher(cipher)
    if cipher:
        argv += ["-c", cipher]
    return argv + ["--", _policy.check_address(dest, "destination"), "receive"]
