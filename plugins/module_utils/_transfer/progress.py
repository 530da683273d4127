# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The copy's progress file on the source, and the watcher of the async copy job. Private."""

from __future__ import annotations

import json
import os
import time

from ..errors import TransferError


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
        rate = done / elapsed if copying(self.phase) else 0.0
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
        if copying(phase) and not self.copying:
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


def copying(phase):
    """A phase in which bytes travel (the rate counts only these)."""
    return phase == "copying" or str(phase).startswith("pre-copying")


def read_json(path):
    """A small JSON file, or None if it is absent or being rewritten."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def watch_job(job_file, seconds, poll=0.1):
    """Watch an Ansible async job's result file for up to `seconds`; returns its result once the
    job has ended (and removes the file, as async_status mode=cleanup does), else None."""
    deadline = time.monotonic() + max(seconds, 0)
    while True:
        if not os.path.exists(job_file):
            raise TransferError("could not find the copy job's result file %s" % job_file)
        job = read_json(job_file)
        if job is not None and ("started" not in job or job.get("finished")):
            os.unlink(job_file)
            return job
        if time.monotonic() >= deadline:
            return None
        time.sleep(poll)
