"""benchmarks/run: parse the options, hold the lock, run the benchmarks, print the summary."""

from __future__ import annotations

import argparse
import datetime
import fcntl
import hashlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback

from .common import (
    GIB,
    MIB,
    REPO,
    BenchError,
    Report,
    Trust,
    WrongResult,
    bed_info,
    domains,
    ensure_bed_up,
    stop_children,
    sweep_leftovers,
)

PROFILES = {
    # CI size: minutes, not hours.
    "small": {"virtual": 8 * GIB, "data": 64 * MIB, "runs": 1, "mem_sizes": (64 * MIB, 256 * MIB),
              "dt_small": 64 * MIB, "dt_large": 512 * MIB, "dt_runs": 1,
              "sched_sizes": (1000, 10000, 100000), "sched_repeats": 3},
    # The sizes of issue #4.
    "full": {"virtual": 8 * GIB, "data": 1 * GIB, "runs": 3, "mem_sizes": (1 * GIB, 4 * GIB),
             "dt_small": 64 * MIB, "dt_large": 2 * GIB, "dt_runs": 3,
             "sched_sizes": (1000, 10000, 100000), "sched_repeats": 5},
}
BENCHMARKS = ("scheduler", "copy", "memory", "downtime", "live", "batch")
TESTS_PATTERN = "pytest.*tests/integration|molecule (test|converge|create|verify)"


def machine():
    def first_line(argv, stderr=False):
        try:
            p = subprocess.run(argv, capture_output=True, text=True, check=False)
        except OSError:
            return "?"
        return ((p.stderr if stderr else p.stdout).strip().splitlines() or ["?"])[0]

    model = "?"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as fh:
        mem_kib = int(fh.readline().split()[1])
    import ansible  # the venv's

    return [
        ("CPUs (nproc)", str(os.cpu_count())),
        ("CPU model", model),
        ("memory", "%.1f GiB" % (mem_kib / 1024 ** 2)),
        ("kernel", platform.release()),
        ("libvirt", first_line(["libvirtd", "--version"])),
        ("QEMU", first_line(["qemu-system-x86_64", "--version"])),
        ("OpenSSH", first_line(["ssh", "-V"], stderr=True)),
        ("rsync", first_line(["rsync", "--version"])),
        ("Python (controller) / ansible-core", "%s / %s" % (platform.python_version(), ansible.__version__)),
        ("product", product_version()),
    ]


PRODUCT_PATHS = ("plugins", "roles", "playbooks", "templates")


def git(*args):
    return subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True, check=False).stdout.strip()


def product_fingerprint():
    """Changes when the product's code does (not when docs or tests do)."""
    text = git("rev-parse", *["HEAD:%s" % p for p in PRODUCT_PATHS]) + git("diff", "HEAD", "--", *PRODUCT_PATHS) \
        + git("status", "--porcelain", "--", *PRODUCT_PATHS)
    return hashlib.sha256(text.encode()).hexdigest()


def product_version():
    """The commit measured, and whether plugins/ roles/ playbooks/ templates/ differ from it."""
    code = git("log", "-1", "--format=%h %s", "--", *PRODUCT_PATHS)
    code = code if len(code) <= 70 else code[:67] + "..."
    head = "HEAD %s, product code of %s" % (git("rev-parse", "--short", "HEAD"), code)
    dirty = git("status", "--porcelain", "--", *PRODUCT_PATHS)
    return "%s%s" % (head, " (+ uncommitted changes in %d file(s) of plugins/roles/playbooks)"
                     % len(dirty.splitlines()) if dirty else "")


def _ancestors():
    """Our own parent processes (e.g. the shell of `make test` whose command line names pytest)."""
    pids, pid = set(), os.getpid()
    while pid > 1:
        try:
            with open("/proc/%d/stat" % pid) as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        pids.add(pid)
    return pids


def tests_running():
    """Is a test session using the bed (integration tests, molecule) running on this machine?"""
    out = subprocess.run(["pgrep", "-f", TESTS_PATTERN], capture_output=True, text=True, check=False).stdout
    return bool(set(int(p) for p in out.split()) - _ancestors() - {os.getpid()})


def others_on_bed():
    """Guests on the bed that are not ours, and whether integration tests are running (noise)."""
    others = sorted("%s:%s" % (h, n) for h in ("hv1", "hv2", "hv3") for n in domains(h) if not n.startswith("bench-"))
    return others, tests_running()


class Interference(threading.Thread):
    """Samples every 2 s whether a test session is running; each benchmark is marked if one was."""

    def __init__(self):
        super().__init__(daemon=True)
        self.seen = set()
        self.current = None
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.wait(2.0):
            if self.current and tests_running():
                self.seen.add(self.current)

    def during(self, name):
        self.current = name
        if tests_running():
            self.seen.add(name)


def wait_for_quiet(limit, report):
    """Wait (up to `limit` s) until no test session uses the bed: their teardown removes every host's
    migration records and `bed up` rewrites authorized_keys, which breaks a resize under way."""
    if limit <= 0 or not tests_running():
        return
    print("benchmarks/run: a test session is using the bed; waiting up to %d s for it to end" % limit,
          file=sys.stderr, flush=True)
    deadline = time.monotonic() + limit
    quiet_since = None
    while time.monotonic() < deadline:
        if tests_running():
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since >= 5:
            return
        time.sleep(1)
    report.emit("(waited %d s for a test session on the bed to end; it did not: running anyway)" % limit)
    report.emit("")


def main(argv):
    ap = argparse.ArgumentParser(prog="benchmarks/run", description=__doc__)
    ap.add_argument("--size", choices=sorted(PROFILES), default="small")
    ap.add_argument("--only", default=",".join(BENCHMARKS),
                    help="comma-separated subset of: %s" % ", ".join(BENCHMARKS))
    ap.add_argument("--out", help="also write the report (Markdown) to this file")
    ap.add_argument("--keep-workdir", action="store_true", help="keep .build/bench/<run> (timelines, inventories)")
    ap.add_argument("--wait-quiet", type=int, default=900, metavar="SECONDS",
                    help="before each benchmark that uses the bed, wait up to this long while a test session "
                         "(integration tests, molecule) is running (default 900; 0: do not wait)")
    args = ap.parse_args(argv)
    only = [b.strip() for b in args.only.split(",") if b.strip()]
    bad = sorted(set(only) - set(BENCHMARKS))
    if bad:
        ap.error("unknown benchmark(s): %s" % ", ".join(bad))
    if os.geteuid() != 0:
        print("benchmarks/run: needs root (the test bed does)", file=sys.stderr)
        return 2
    profile = dict(PROFILES[args.size], name=args.size)

    os.makedirs(os.path.join(REPO, ".build", "bench"), exist_ok=True)
    lock = open(os.path.join(REPO, ".build", "bench", ".lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        print("benchmarks/run: another benchmark run holds .build/bench/.lock", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupted)
    run_id = "%x" % int(time.time() * 1000)
    workdir = os.path.join(REPO, ".build", "bench", run_id)
    os.makedirs(workdir)

    report = Report()
    started = time.monotonic()
    report.emit("## hypervisor.resize benchmarks, size %s" % args.size)
    report.emit("")
    report.emit("Run %s UTC, `%s`. Figures in every table come from this one run."
                % (datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
                   " ".join(["benchmarks/run"] + list(argv))))
    report.emit("")
    ensure_bed_up()
    others, tests = others_on_bed()
    report.table("Machine", ("what", "value"), machine() + [
        ("test bed", "hv1..hv3 on %s (network namespaces on this machine, TCG guests)" % bed_info()["subnet"]),
        ("other load at start", "%d other guest(s) on the bed%s"
         % (len(others), "; integration tests running" if tests else "")),
    ])
    wrong = False
    fingerprint0 = product_fingerprint()
    sweep_leftovers()
    monitor = Interference()
    monitor.start()

    def bench(name, fn, bed_used=True):
        if bed_used:
            wait_for_quiet(args.wait_quiet, report)
        monitor.during(name)
        try:
            return guarded(report, name, fn)
        finally:
            monitor.current = None

    try:
        if "scheduler" in only:
            wrong |= bench("3 scheduler", lambda: _scheduler(report, profile), bed_used=False)
        if {"copy", "memory"} & set(only):
            with Trust(run_id) as trust:
                wrong |= bench("1/5 copy", lambda: _copy(report, trust, profile, only))
        if "downtime" in only:
            wrong |= bench("2 downtime", lambda: _downtime(report, profile, workdir))
        if "live" in only:
            wrong |= bench("6 live", lambda: _live(report, profile, workdir))
        if "batch" in only:
            wrong |= bench("4 batch", lambda: _batch(report, profile, workdir))
    except KeyboardInterrupt:
        report.error("run", "interrupted; stopping what it started and cleaning up")
    finally:
        stop_children()
        try:
            sweep_leftovers()
        except Exception as exc:  # report it, keep the summary
            report.error("cleanup", "%s" % exc)
        others2, tests2 = others_on_bed()
        monitor.stopped.set()
        if product_fingerprint() != fingerprint0:
            report.emit("**The product changed during this run** (now: %s): figures may mix two versions."
                        % product_version())
            report.emit("")
        report.emit("Other load at the end: %d other guest(s) on the bed%s. Total run time %.0f s."
                    % (len(others2), "; integration tests running" if tests2 else "",
                       time.monotonic() - started))
        report.emit("")
        if monitor.seen:
            report.emit("**A test session (integration tests or molecule) ran on the bed during: %s.** Besides "
                        "CPU noise, its teardown removes every host's migration records and its `bed up` "
                        "rewrites authorized_keys, which can break a resize under way: treat failures there "
                        "as interference and rerun." % ", ".join(sorted(monitor.seen)))
            report.emit("")
        report.summary()
        if args.out:
            with open(args.out, "w") as fh:
                fh.write("\n".join(report.sections) + "\n")
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if wrong or report.errors else 0


def _interrupted(signum, _frame):
    raise KeyboardInterrupt("signal %d" % signum)


def guarded(report, name, fn):
    """Run one benchmark; returns True if it found a wrong result. Errors are reported, not raised."""
    try:
        fn()
    except WrongResult as exc:
        report.error(name, "WRONG RESULT: %s" % exc)
        return True
    except (BenchError, subprocess.TimeoutExpired, OSError, ValueError, KeyError) as exc:
        traceback.print_exc(file=sys.stderr)
        report.error(name, "%s: %s" % (type(exc).__name__, exc))
    return False


def _scheduler(report, profile):
    from .scheduler import run_scheduler
    run_scheduler(report, profile)


def _copy(report, trust, profile, only):
    from .copybench import CopyBench
    bench = CopyBench(report, trust, profile)
    try:
        bench.make_sources()
        if "copy" in only:
            bench.run_copies()
            bench.copy_tables()
            bench.make_ext4_sources()
            bench.run_ext4_copies()
            bench.ext4_tables()
        if "memory" in only:
            bench.run_memory()
    finally:
        bench.cleanup()


def _downtime(report, profile, workdir):
    from .downtime import run_downtime
    run_downtime(report, profile, workdir)


def _live(report, profile, workdir):
    from .live import run_live
    run_live(report, profile, workdir)


def _batch(report, profile, workdir):
    from .batch import run_batch
    run_batch(report, profile, workdir)
