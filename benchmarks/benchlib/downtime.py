"""Benchmark 2: downtime of a full cold resize with the real playbook, hv1 -> hv2, as the data on
the disk grows, with and without the copy while the VM runs (pre-copy).

Scenarios: a little data and a lot (written into the guest's raw disk before it boots), each with
resize_precopy false (everything copied after the power-off) and true; and a lot of data with a
guest that keeps writing its disk during the pre-copy (bed guest --guest-flags writer).

Downtime is from the product's shutdown request on the source to the guest's HVR-READY on the
destination's serial console (all wall-clock, this machine's one clock):
  - libvirt events inside hv1 (benchmarks/helpers/watch.py): the record write right before the
    shutdown request (the last one before the guest stops), the guest's stop, and the record
    writes after it ("stopped", then "post-migrating" when the copy ended);
  - hv2's define event and its serial console log, polled every 20 ms;
  - virt_power_off_migrate's own figures (precopy rounds and bytes, bytes after the power-off).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

from .common import (
    BED,
    GIB,
    HOST_PYTHON,
    IMAGES,
    PREFIX,
    BenchError,
    WrongResult,
    bed,
    domains,
    drop_caches,
    failure_summary,
    fmt_bytes,
    fmt_s,
    hexec,
    host_helper_path,
    host_path,
    median,
    playbook,
    reap,
    spawn,
)
from .copybench import data_bytes, make_disk

NAME = PREFIX + "dt"
FLAVOR = "m1.medium"      # 1 vCPU/128 MiB/3 GiB -> 3 vCPU/384 MiB/3 GiB: the same disk in every scenario
DISK = 3 * GIB
RATIO = 1.2               # target: with pre-copy, the large VM's downtime <= 1.2 x the small one's
POWER_OFF_TASK = "Power off on the source and copy the disks to the destination"


class Watcher:
    """benchmarks/helpers/watch.py inside a host, its JSON lines collected in a thread."""

    def __init__(self, host, name):
        self.host = host
        self.events = []
        self.proc = spawn([BED, "exec", host, HOST_PYTHON, host_helper_path(host, "watch.py"), name, IMAGES],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        if not self.ready.wait(20):
            self.stop()
            raise BenchError("event watcher on %s did not start: %s" % (host, self.proc.stderr.read()[-1000:]))

    def _read(self):
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("ready"):
                self.ready.set()
            else:
                self.events.append(ev)

    def stop(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait()
        reap(self.proc)
        self.thread.join(5)


class ConsolePoller:
    """Polls a console log file every 20 ms: when it appears and when a marker shows up in it."""

    def __init__(self, path, marker=b"HVR-READY", interval=0.02):
        self.path, self.marker, self.interval = path, marker, interval
        self.appeared = self.seen = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self):
        while not self._stop.is_set():
            now = time.time()
            try:
                with open(self.path, "rb") as fh:
                    data = fh.read()
                if self.appeared is None:
                    self.appeared = now
                if self.marker in data:
                    self.seen = now
                    return
            except FileNotFoundError:
                pass
            time.sleep(self.interval)

    def wait(self, timeout):
        self.thread.join(timeout)
        return self.seen

    def stop(self):
        self._stop.set()
        self.thread.join(2)


def first(events, after=0.0, **match):
    """Time of the first event at or after `after` matching every key (task names: role prefix ignored)."""
    for ev in events:
        if ev["t"] >= after and all(ev.get(k) == v or (k == "task" and str(ev.get(k)).endswith(" : " + v))
                                    for k, v in match.items()):
            return ev["t"]
    return None


def scenarios(profile):
    small, large = profile["dt_small"], profile["dt_large"]
    return [
        ("little data, copy after the power-off", small, False, False),
        ("a lot of data, copy after the power-off", large, False, False),
        ("little data, pre-copy", small, True, False),
        ("a lot of data, pre-copy", large, True, False),
        ("a lot of data, pre-copy, the guest writes all along", large, True, True),
    ]


def run_downtime(report, profile, workdir):
    """Each scenario profile["dt_runs"] times (a fresh guest each); the table shows medians."""
    rows, got = [], {}
    for label, data, pre, writer in scenarios(profile):
        runs = []
        for n in range(1, profile["dt_runs"] + 1):
            try:
                runs.append(one_resize(profile, workdir, "%s-%d" % (len(got), n), data, pre, writer))
            finally:
                bed("rm-guest", NAME)
        m = {k: median([r[k] for r in runs]) for k in runs[0] if isinstance(runs[0][k], (int, float))}
        got[label] = m
        rows.append([label, fmt_bytes(runs[-1]["disk_data"]), "%d" % m["rounds"] if pre else "-",
                     fmt_bytes(m["live_bytes"]) if pre else "-", fmt_bytes(m["after_bytes"]),
                     fmt_s(m["shutdown"]), fmt_s(m["copy"]), fmt_s(m["finish_boot"]), "**%s**" % fmt_s(m["downtime"])])
    report.table("2. Downtime of a cold resize, hv1 -> hv2, m1.tiny -> %s (real playbook%s)"
                 % (FLAVOR, ", median of %d" % profile["dt_runs"] if profile["dt_runs"] > 1 else ""),
                 ["scenario", "data on the disk", "rounds", "sent while it ran", "sent after the power-off",
                  "shutdown", "copy after the power-off", "finish + boot", "downtime"], rows,
                 notes=["Guest: the bed's tiny guest on a 3 GiB raw disk holding the data (random, written before "
                        "it boots; a fresh guest each run). Downtime: shutdown request on hv1 (the record write "
                        "right before it, a libvirt event) -> HVR-READY on hv2's console. Shutdown: request -> the "
                        "record write after the guest stopped; copy after the power-off: that write -> the "
                        "post-migrating write; finish + boot: the rest. Page cache dropped before each playbook.",
                        "The writing guest writes 4 MiB of random data at a time with fsync, as fast as it can "
                        "(about 25 MiB/s under TCG here), from its boot to its power-off; pre-copy rounds: at most "
                        "3, another while the new delta is above 64 MiB and smaller than the one sent before."])
    small, large = got["little data, pre-copy"], got["a lot of data, pre-copy"]
    report.target("2 downtime", "with pre-copy, a lot of data (%s) <= %.1f x a little (%s)"
                  % (fmt_bytes(profile["dt_large"]), RATIO, fmt_bytes(profile["dt_small"])),
                  "%.2f s vs %.2f s (%.2fx); without pre-copy %.2f s vs %.2f s"
                  % (large["downtime"], small["downtime"], large["downtime"] / small["downtime"],
                     got["a lot of data, copy after the power-off"]["downtime"],
                     got["little data, copy after the power-off"]["downtime"]),
                  large["downtime"] <= RATIO * small["downtime"])


def one_resize(profile, workdir, tag, data, pre, writer):
    bed("guest", NAME, "--host", "hv1", "--vcpus", "1", "--memory-mb", "128", "--disk-gb", "3", "--format", "raw",
        "--no-start", *(("--guest-flags", "writer") if writer else ()))
    disk = host_path("hv1", "%s/%s.raw" % (IMAGES, NAME))
    # The data, spread over the disk (the first MiB stays zero: the guest's boot counter lives there).
    make_disk(disk + ".new", DISK, data, seed="bench-dt")
    st = os.stat(disk)
    os.chown(disk + ".new", st.st_uid, st.st_gid)
    os.replace(disk + ".new", disk)
    os.sync()
    disk_data = data_bytes(disk)
    hexec("hv1", ["virsh", "-q", "-c", "qemu:///system", "start", NAME])
    bed("wait-ready", NAME, "--host", "hv1", "--timeout", "120")

    console = host_path("hv2", "/var/log/libvirt/qemu/%s-console.log" % NAME)
    if os.path.exists(console):
        os.unlink(console)
    watcher = Watcher("hv1", NAME)
    poller = ConsolePoller(console)
    try:
        drop_caches()
        res = playbook("resize.yml", os.path.join(workdir, "downtime-%s.jsonl" % tag), instance=NAME, flavor=FLAVOR,
                       target_host="hv2", resize_precopy=pre)
        ready = poller.wait(120) if res["rc"] == 0 else None
    finally:
        poller.stop()
        watcher.stop()
    if res["rc"] != 0:
        raise BenchError("resize of %s failed: %s" % (NAME, failure_summary(res)))
    if ready is None:
        raise BenchError("%s never printed HVR-READY on hv2" % NAME)
    conf = playbook("confirm.yml", os.path.join(workdir, "confirm-%s.jsonl" % tag), instance=NAME)
    if conf["rc"] != 0:
        raise BenchError("confirm of %s failed: %s" % (NAME, failure_summary(conf)))
    where = {h: domains(h).get(NAME) for h in ("hv1", "hv2", "hv3")}
    rep = bed("report", NAME, "--host", "hv2").stdout.strip()
    if where != {"hv1": None, "hv2": "running", "hv3": None} or "nproc=3" not in rep or "boot_count=2" not in rep:
        raise WrongResult("after resize and confirm %s is %s, report %r" % (NAME, where, rep))

    src = watcher.events
    t_off = first(src, ev="lifecycle", what="stopped")
    meta = [e["t"] for e in src if e["ev"] == "metadata"]
    before = [t for t in meta if t_off is not None and t < t_off]
    after = [t for t in meta if t_off is not None and t > t_off]
    if t_off is None or not before or len(after) < 2:
        raise BenchError("timeline incomplete on hv1: stop %s, %d record writes before it, %d after"
                         % (t_off, len(before), len(after)))
    t_req, t_noticed, t_copied = before[-1], after[0], after[1]
    result = next((e for e in res["timeline"] if e["ev"] == "ok" and "shutdown" in e.get("result", {})), {})
    result = result.get("result", {})
    summary = result.get("precopy") or {}
    if pre and not summary.get("rounds"):
        raise WrongResult("pre-copy was asked for and made no round: %s" % json.dumps(summary))
    after_bytes = sum(int(d.get("bytes") or 0) for d in result.get("disks") or [] if d.get("after_stop"))
    return {"downtime": ready - t_req, "shutdown": t_noticed - t_req, "copy": t_copied - t_noticed,
            "finish_boot": ready - t_copied, "rounds": summary.get("rounds") or 0,
            "live_bytes": summary.get("live_bytes") or 0, "after_bytes": after_bytes, "disk_data": disk_data}
