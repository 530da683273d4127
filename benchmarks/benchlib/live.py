"""Benchmark 6: what the guest sees of a live resize, beside a cold one, measured the same way.

The guest prints a heartbeat (`HVR-TICK <uptime>`) every 0.1 s to its serial log (bed guest
--guest-flags heartbeat); a thread reads the log every 10 ms and notes when each tick arrives. A
pause of the guest - stopped, moved, booting, or frozen by QEMU while something is applied - is a
gap between two ticks. The live resize (m1.tiny -> m1.small within ceilings of 3 vCPUs / 384 MiB,
on hv1) is then followed by a cold one of the same guest (-> m1.medium, resize_mode=cold, to hv2):
its gap is from the last tick on hv1 to the first on hv2. The guest's own boot counter says which
resize rebooted it.
"""

from __future__ import annotations

import os
import threading
import time

from .common import PREFIX, BenchError, WrongResult, bed, failure_summary, fmt_s, host_path, playbook

NAME = PREFIX + "live"


class Ticks:
    """Arrival times of HVR-TICK lines in one or more console logs."""

    def __init__(self, paths, interval=0.01):
        self.paths, self.interval = paths, interval
        self.arrivals = []  # (wall time, host index)
        self._sizes = {p: 0 for p in paths}
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self):
        while not self._stop.is_set():
            now = time.time()
            for i, path in enumerate(self.paths):
                try:
                    with open(path, "rb") as fh:
                        fh.seek(self._sizes[path])
                        data = fh.read()
                except FileNotFoundError:
                    continue
                if data.endswith(b"\n"):
                    self._sizes[path] += len(data)
                    self.arrivals += [(now, i)] * data.count(b"HVR-TICK")
            time.sleep(self.interval)

    def stop(self):
        self._stop.set()
        self.thread.join(2)

    def longest_gap(self, start, end):
        """The longest time without a tick between start and end (wall clock)."""
        times = [t for t, _host in self.arrivals]
        inside = [start] + [t for t in times if start <= t <= end] + [end]
        return max(b - a for a, b in zip(inside, inside[1:]))


def report_of(host):
    line = bed("report", NAME, "--host", host).stdout.strip().splitlines()[-1]
    return dict(kv.split("=", 1) for kv in line.split()[1:])


def run_live(report, profile, workdir):
    consoles = [host_path(h, "/var/log/libvirt/qemu/%s-console.log" % NAME) for h in ("hv1", "hv2")]
    for path in consoles:
        if os.path.exists(path):
            os.unlink(path)
    bed("guest", NAME, "--host", "hv1", "--vcpus", "1", "--memory-mb", "128", "--disk-gb", "1",
        "--max-vcpus", "3", "--max-memory-mb", "384", "--guest-flags", "heartbeat")
    try:
        deadline = time.time() + 30
        while int(report_of("hv1")["memtotal_kb"]) > 100 * 1024:  # the balloon settles after boot
            if time.time() > deadline:
                raise BenchError("the guest's balloon never reached 128 MiB")
            time.sleep(0.5)
        ticks = Ticks(consoles)
        try:
            time.sleep(2)  # a baseline of ticks
            base_gap = ticks.longest_gap(time.time() - 2, time.time())
            live = playbook("resize.yml", os.path.join(workdir, "live.jsonl"), instance=NAME, flavor="m1.small",
                            mode="live", confirm="true")
            if live["rc"] != 0:
                raise BenchError("live resize failed: %s" % failure_summary(live))
            time.sleep(1)
            live_gap = ticks.longest_gap(live["start"], live["end"])
            after_live = report_of("hv1")
            cold = playbook("resize.yml", os.path.join(workdir, "cold.jsonl"), instance=NAME, flavor="m1.medium",
                            mode="cold", target_host="hv2", confirm="true")
            if cold["rc"] != 0:
                raise BenchError("cold resize failed: %s" % failure_summary(cold))
            deadline = time.time() + 60
            while not any(host == 1 and t > cold["start"] for t, host in ticks.arrivals) and time.time() < deadline:
                time.sleep(0.1)
            cold_gap = ticks.longest_gap(cold["start"], time.time())
            after_cold = report_of("hv2")
        finally:
            ticks.stop()
    finally:
        bed("rm-guest", NAME)
    if (after_live["nproc"], after_live["boot_count"]) != ("2", "1"):
        raise WrongResult("after the live resize the guest reports %s (want 2 vCPUs, boot 1)" % after_live)
    if (after_cold["nproc"], after_cold["boot_count"]) != ("3", "2"):
        raise WrongResult("after the cold resize the guest reports %s (want 3 vCPUs, boot 2)" % after_cold)
    report.table("6. What the guest sees: a live resize beside a cold one (heartbeat every 0.1 s)",
                 ["resize", "longest gap between heartbeats", "playbook wall time", "guest rebooted"],
                 [["none (baseline, 2 s)", fmt_s(base_gap), "-", "-"],
                  ["live, hv1: 1 -> 2 vCPUs, 128 -> 256 MiB, disk 1 -> 2 GiB", fmt_s(live_gap),
                   fmt_s(live["seconds"]), "no (boot %s, uptime %s s)" % (after_live["boot_count"],
                                                                          after_live["uptime_s"])],
                  ["cold, hv1 -> hv2: -> 3 vCPUs, 384 MiB, 3 GiB", fmt_s(cold_gap), fmt_s(cold["seconds"]),
                   "yes (boot %s)" % after_cold["boot_count"]]],
                 notes=["The gap is the longest stretch without a heartbeat while the playbook ran (for the cold "
                        "resize: until the first heartbeat on hv2), read from the serial logs every 10 ms; the "
                        "baseline shows the noise of the guest's own 0.1 s loop under TCG."])
    report.target("6 live pause", "a live resize pauses the guest for less than 1 s", "%s" % fmt_s(live_gap),
                  live_gap < 1.0)
