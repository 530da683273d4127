"""Timeline of one domain on one host, as JSON lines with wall-clock times (time.time()).

Runs inside a test bed host (`bed exec hvN /usr/bin/python3 watch.py NAME DIR`) for the downtime
benchmark. Prints {"ready": true} once listening, then one line per event:
  libvirt lifecycle events of NAME   {"t", "ev": "lifecycle", "what": "stopped"|"started"|...}
  libvirt metadata changes of NAME   {"t", "ev": "metadata"}   (each set_record of the product)
  inotify on DIR for files NAME.*    {"t", "ev": "open"|"close_write"|"moved_to"|..., "file"}
Stops when its stdin closes. Never changes anything.
"""

import ctypes
import json
import os
import select
import struct
import sys
import threading
import time

import libvirt

LIFECYCLE = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown",
}
IN_MODIFY, IN_CLOSE_WRITE, IN_OPEN, IN_MOVED_TO, IN_CREATE = 0x2, 0x8, 0x20, 0x80, 0x100
IN_NAMES = {IN_MODIFY: "modify", IN_CLOSE_WRITE: "close_write", IN_OPEN: "open", IN_MOVED_TO: "moved_to",
            IN_CREATE: "create"}
LOCK = threading.Lock()


def emit(obj):
    obj.setdefault("t", time.time())
    with LOCK:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def libvirt_loop(name):
    libvirt.virEventRegisterDefaultImpl()
    conn = libvirt.openReadOnly("qemu:///system")

    def on_lifecycle(_conn, dom, event, detail, _opaque):
        if dom.name() == name:
            emit({"ev": "lifecycle", "what": LIFECYCLE.get(event, str(event)), "detail": detail})

    def on_metadata(_conn, dom, mtype, nsuri, _opaque):
        if dom.name() == name:
            emit({"ev": "metadata", "ns": nsuri})

    conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, on_lifecycle, None)
    conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_METADATA_CHANGE, on_metadata, None)
    while True:
        libvirt.virEventRunDefaultImpl()


def inotify_loop(directory, name, ready):
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(0)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1")
    mask = IN_MODIFY | IN_CLOSE_WRITE | IN_OPEN | IN_MOVED_TO | IN_CREATE
    if libc.inotify_add_watch(fd, directory.encode(), mask) < 0:
        raise OSError(ctypes.get_errno(), "inotify_add_watch %s" % directory)
    ready.set()
    last_modify = {}
    while True:
        buf = os.read(fd, 65536)
        now = time.time()
        pos = 0
        while pos < len(buf):
            _wd, ev_mask, _cookie, length = struct.unpack_from("iIII", buf, pos)
            fname = buf[pos + 16:pos + 16 + length].rstrip(b"\0").decode("utf-8", "replace")
            pos += 16 + length
            if not fname.startswith(name + "."):
                continue
            for bit, label in IN_NAMES.items():
                if ev_mask & bit:
                    if bit == IN_MODIFY:  # one line per second of writes is plenty
                        if now - last_modify.get(fname, 0) < 1.0:
                            continue
                        last_modify[fname] = now
                    emit({"t": now, "ev": label, "file": fname})


def main():
    name, directory = sys.argv[1], sys.argv[2]
    ready = threading.Event()
    threading.Thread(target=libvirt_loop, args=(name,), daemon=True).start()
    threading.Thread(target=inotify_loop, args=(directory, name, ready), daemon=True).start()
    if not ready.wait(10):
        sys.exit("inotify watch did not start")
    time.sleep(0.3)  # let the libvirt thread register its callbacks
    emit({"ready": True})
    while select.select([sys.stdin], [], [])[0]:
        if not os.read(sys.stdin.fileno(), 4096):
            break


if __name__ == "__main__":
    main()
