"""Benchmark 2: downtime of a full cold resize with the real playbook, hv1 -> hv2.

Downtime is from the product's shutdown request on the source to the guest's HVR-READY on the
destination's serial console. The split comes from (all wall-clock, this machine's one clock):
  - libvirt events inside hv1 and hv2 (benchmarks/helpers/watch.py): the record writes of
    virt_power_off_migrate (metadata changes: "powering off", "stopped", "post-migrating"),
    the guest's stop, the new domain's define and start;
  - inotify on hv2's images directory: the receiver's link into place, then the first open of the disk by
    virt_finish_migration (qemu-img info before qemu-img resize);
  - the serial console log on hv2, polled every 20 ms;
  - the modules' own figures (shutdown.seconds, per-disk seconds) from the play, via the
    bench_timeline callback.
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
    helper,
    hexec,
    host_helper_path,
    host_path,
    median,
    playbook,
    reap,
    run,
    spawn,
)
from .copybench import copy_with, data_bytes, make_disk

NAME = PREFIX + "dt"
FLAVOR = "m1.small"       # 1 vCPU/128 MiB/1 GiB (m1.tiny) -> 2 vCPU/256 MiB/2 GiB: grow included
SLACK = 8.0               # target: downtime <= copy floor + 8 s
POWER_OFF_TASK = "Power off on the source and copy the disks to the destination"
FINISH_TASK = "Grow the disks, define the resized domain and restore its power state"


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


def run_downtime(report, trust, profile, workdir):
    """profile["dt_runs"] resizes of a fresh guest each; the table shows the median of every phase."""
    runs = []
    for n in range(1, profile["dt_runs"] + 1):
        try:
            runs.append(one_resize(trust, profile, workdir, n))
        finally:
            bed("rm-guest", NAME)
    labels = [label for label, _sec, _how in runs[0]["rows"]]
    rows = []
    for i, label in enumerate(labels):
        values = [r["rows"][i][1] for r in runs]
        how = runs[-1]["rows"][i][2]
        rows.append([label, fmt_s(median([v for v in values if v is not None]))]
                    + ([fmt_s(v) for v in values] if len(runs) > 1 else []) + [how])
    last = runs[-1]
    headers = ["phase", "seconds" if len(runs) == 1 else "median"] + \
        (["run %d" % (i + 1) for i in range(len(runs))] if len(runs) > 1 else []) + ["measured by"]
    report.table("2. Downtime of a cold resize, hv1 -> hv2, m1.tiny -> %s (real playbook, disk with %s of data%s)"
                 % (FLAVOR, fmt_bytes(last["disk_data"]), ", median of %d" % len(runs) if len(runs) > 1 else ""),
                 headers, rows,
                 notes=["Guest: the bed's tiny guest, qcow2 root disk of 1 GiB virtual holding %s of random data "
                        "(a fresh guest each run); grown to 2 GiB on hv2. Page cache dropped before the playbook. "
                        "After confirm: on hv2 only, %s." % (fmt_bytes(last["disk_data"]), last["report"]),
                        "hv2's own facts after the resize, before confirm (last run): %s." % last["facts"]])
    downtime = median([r["downtime"] for r in runs])
    floor = median([r["floor"] for r in runs])
    report.target("2 downtime", "downtime <= copy floor + %.0f s" % SLACK,
                  "%.2f s vs %.2f + %.0f s%s" % (downtime, floor, SLACK, " (medians)" if len(runs) > 1 else ""),
                  downtime <= floor + SLACK)


def one_resize(trust, profile, workdir, n):
    disk_in = "%s/%s.qcow2" % (IMAGES, NAME)
    bed("guest", NAME, "--host", "hv1", "--vcpus", "1", "--memory-mb", "128", "--disk-gb", "1", "--format", "qcow2",
        "--no-start")
    # Give the guest's disk real data (the first MiB stays zero: the guest's boot counter lives there).
    fill = host_path("hv1", "%s/%sdt-fill.raw" % (IMAGES, PREFIX))
    disk = host_path("hv1", disk_in)
    make_disk(fill, GIB, profile["dt_data"], seed="bench-dt")
    try:
        run(["qemu-img", "convert", "-q", "-O", "qcow2", fill, disk + ".new"])
    finally:
        os.unlink(fill)
    os.replace(disk + ".new", disk)
    os.sync()
    disk_data = data_bytes(disk)

    # The copy floor of this very disk, same path and cipher, cold cache.
    floor = copy_with(trust, "floor", disk_in, None, "dt-floor-%d" % n)
    if floor["bytes"] != disk_data:
        raise BenchError("floor streamed %d bytes, the disk has %d" % (floor["bytes"], disk_data))

    hexec("hv1", ["virsh", "-q", "-c", "qemu:///system", "start", NAME])
    bed("wait-ready", NAME, "--host", "hv1", "--timeout", "120")

    console = host_path("hv2", "/var/log/libvirt/qemu/%s-console.log" % NAME)
    if os.path.exists(console):
        os.unlink(console)
    watchers = {h: Watcher(h, NAME) for h in ("hv1", "hv2")}
    poller = ConsolePoller(console)
    try:
        drop_caches()
        res = playbook("resize.yml", os.path.join(workdir, "downtime-%d.jsonl" % n), instance=NAME, flavor=FLAVOR,
                       target_host="hv2")
        ready = poller.wait(120) if res["rc"] == 0 else None
    finally:
        poller.stop()
        for w in watchers.values():
            w.stop()
    if res["rc"] != 0:
        raise BenchError("resize of %s failed: %s" % (NAME, failure_summary(res)))
    if ready is None:
        raise BenchError("%s never printed HVR-READY on hv2" % NAME)

    # Before confirm: what the destination's facts count for this VM.
    d_facts = helper("hv2", "hostfacts.py")
    hv2 = d_facts["hypervisor"]
    d_vm = next((d for d in hv2["domains"] if d["name"] == NAME), None)
    d_claims = [c for c in d_facts["claims"] if c["instance"] == NAME]
    all_claims = sum(int(c["claim"].get("vcpus", 0)) for c in d_facts["claims"])
    twice = bool(d_vm and d_claims and hv2["claimed_vcpus"] == all_claims)

    t0 = time.time()
    conf = playbook("confirm.yml", os.path.join(workdir, "confirm-%d.jsonl" % n), instance=NAME)
    confirm_s = time.time() - t0
    if conf["rc"] != 0:
        raise BenchError("confirm of %s failed: %s" % (NAME, failure_summary(conf)))
    where = {h: domains(h).get(NAME) for h in ("hv1", "hv2", "hv3")}
    rep = bed("report", NAME, "--host", "hv2").stdout.strip()
    if where != {"hv1": None, "hv2": "running", "hv3": None} or "nproc=2" not in rep or \
            "disk_bytes=%d" % (2 * GIB) not in rep or "boot_count=2" not in rep:
        raise WrongResult("after resize and confirm %s is %s, report %r" % (NAME, where, rep))

    src, dst = watchers["hv1"].events, watchers["hv2"].events
    tl = res["timeline"]
    pow_start = first(tl, ev="task_start", task=POWER_OFF_TASK)
    # The power-off and copy runs as an async job; the role's wait task returns its result.
    pow_ok = next((e for e in tl if e["ev"] == "ok" and "shutdown" in e.get("result", {})), {})
    fin_start = first(tl, ev="task_start", task=FINISH_TASK)
    if pow_start is None:
        raise BenchError("the play has no task %r" % POWER_OFF_TASK)
    meta = [e["t"] for e in src if e["ev"] == "metadata" and e["t"] >= pow_start]
    if len(meta) < 3:
        raise BenchError("expected 3 record writes on hv1 during the power-off task, saw %d" % len(meta))
    t_req, t_noticed, t_copied = meta[0], meta[1], meta[2]
    t_off = first(src, after=t_req, ev="lifecycle", what="stopped")
    t_guest_down = first(src, after=t_req, ev="lifecycle", what="shutdown")
    # The receiver links the verified file into place (a new name: "create"; a rename before).
    t_moved = first(dst, after=t_req, ev="create", file=NAME + ".qcow2") or \
        first(dst, after=t_req, ev="moved_to", file=NAME + ".qcow2")
    t_grow = first(dst, after=t_moved or t_copied, ev="open", file=NAME + ".qcow2")
    t_defined = first(dst, after=t_req, ev="lifecycle", what="defined")
    t_started = first(dst, after=t_req, ev="lifecycle", what="started")
    missing = [k for k, v in (("guest stopped", t_off), ("disk received", t_moved), ("finish opened the disk", t_grow),
                              ("defined", t_defined), ("started", t_started)) if v is None]
    if missing:
        raise BenchError("timeline incomplete, no event for: %s" % ", ".join(missing))
    result = pow_ok.get("result", {})
    shut_mod = (result.get("shutdown") or {}).get("seconds")
    disks = result.get("disks") or []
    copy_mod = sum(float(d.get("seconds") or 0) for d in disks)
    copied = sum(int(d.get("bytes") or 0) for d in disks)

    downtime = ready - t_req
    parts = [
        ("shutdown: ACPI request -> the module sees the guest off", t_noticed - t_req,
         "libvirt metadata events on hv1 (the record writes before and after power_off)"),
        ("  the module's own figure: shutdown.seconds", shut_mod, "returned by virt_power_off_migrate"),
        ("  of which: guest powers off (QEMU reports it)", (t_guest_down or t_off) - t_req, "lifecycle event"),
        ("  of which: libvirt tears QEMU down", t_off - (t_guest_down or t_off), "lifecycle events"),
        ("  of which: the module's poll notices it", t_noticed - t_off, "metadata event - stop event"),
        ("copy: %s of data, %d disk(s), with checksum" % (fmt_bytes(copied), len(disks)), t_copied - t_noticed,
         "metadata events on hv1 (record writes before and after the copy)"),
        ("  the module's own figure: sum of disks[].seconds", copy_mod, "returned by virt_power_off_migrate"),
        ("orchestration: source module returns -> destination module at work", t_grow - t_copied,
         "inotify on hv2 (first open of the received disk)"),
        ("grow + define", t_defined - t_grow, "inotify + define event on hv2"),
        ("boot: define -> HVR-READY on the console", ready - t_defined,
         "of which QEMU start %.2f s (start event)" % (t_started - t_defined)),
    ]
    rows = list(parts) + [
        ("**downtime** (shutdown request -> READY on hv2)", downtime, "sum of the unindented rows above"),
        ("copy floor of this disk (%s, ssh to /dev/null)" % fmt_bytes(disk_data), floor["seconds"],
         "same path and cipher, cold cache"),
        ("playbook wall time (resize.yml)", res["seconds"], "whole play"),
        ("  of which before the shutdown request", t_req - res["start"], "facts, schedule, key, claim, copy check"),
        ("  READY came after the playbook returned by", ready - res["end"], "the guest still booting"),
        ("  controller: the finish task started after the copy ended by", fin_start and fin_start - t_copied,
         "bench_timeline callback (the wait task's poll)"),
        ("confirm.yml wall time", confirm_s, "not part of the downtime"),
    ]
    return {"rows": rows, "downtime": downtime, "floor": floor["seconds"], "disk_data": disk_data, "report": rep,
            "facts": "allocated_vcpus %d (this VM: %s), claimed_vcpus %d; this VM's claim is %s: %s"
                     % (hv2["allocated_vcpus"], d_vm["vcpus"] if d_vm else "not defined", hv2["claimed_vcpus"],
                        ", ".join("%s (%s vCPU)" % (c["status"], c["claim"].get("vcpus")) for c in d_claims)
                        or "gone", "counted twice (as a domain and as a claim)" if twice else "counted once")}
