"""Benchmark 3: the controller's resize_schedule filter over many synthetic hypervisors.

The records have the shape of virt_host_facts results ({"changed", "hypervisor": {...}} per host,
the source host also carrying "instance"), with a seeded mix of sizes, loads, open claims, a few
hosts without the VM's bridge, of another architecture, unreachable, in maintenance or disabled,
and some with their own allocation ratios. The filter is called as Ansible calls it (through
FilterModule().filters(), i.e. with the error wrapper), in this process; Ansible's templating of
such a large variable is not included.

Then place_many (module_utils/schedule.py): 1,000 VMs of that fleet resized in one batch over its
10,000 hosts, each placement counted by the ones after it, with the VM-specific checks of the filter
(resize.py's _vm_reasons), some VMs in place, a few drained hosts and named targets, and a few VMs
no host can take.
"""

from __future__ import annotations

import gc
import random
import statistics
import time

from ansible_collections.hypervisor.resize.plugins.filter.resize import FilterModule, _move_review, _vm_reasons
from ansible_collections.hypervisor.resize.plugins.module_utils.schedule import place_many

from .common import GIB, WrongResult, fmt_s

TARGET_SIZE, TARGET_SECONDS = 10000, 0.2
MANY_VMS, MANY_HOSTS, MANY_SECONDS = 1000, 10000, 2.0
FLAVOR = {"name": "m1.large", "vcpus": 4, "memory_mb": 8192, "root_gb": 40, "ephemeral_gb": 0, "swap_mb": 0}


def instance(name="vm-under-test"):
    disk = {"device": "disk", "bus": "virtio", "target": "vda", "path": "/var/lib/libvirt/images/%s.qcow2" % name,
            "format": "qcow2", "network": None, "readonly": False, "virtual_size": 20 * GIB,
            "allocation": 6 * GIB, "file_size": 6 * GIB, "backing_file": None}
    return {"name": name, "uuid": "0b9e7c1e-3f0a-4c43-9d52-6f1d0c2a7e11", "state": "running", "vcpus": 2,
            "memory_mb": 4096, "disks": [disk], "root_disk": disk, "copy_disks": [disk], "ephemeral_disk": None,
            "swap_disk": None,
            "interfaces": [{"type": "bridge", "mac": "52:54:00:12:34:56", "source": {"bridge": "br-vm"},
                            "model": "virtio"}],
            "boot_files": [], "model": {}, "xml": "<domain/>", "migration": None}


def synthetic(n, seed=4):
    """{host: virt_host_facts result} for n hosts, and the per-host options (host vars)."""
    rnd = random.Random(seed)
    results, options = {}, {}
    for i in range(n):
        name = "hv%06d" % i
        if i and rnd.random() < 0.005:
            results[name] = {"failed": True, "msg": "Failed to connect to the host via ssh", "unreachable": True}
            continue
        cpus = rnd.choice((16, 32, 48, 64, 128))
        mem = cpus * rnd.choice((4096, 8192))
        doms = [{"name": "vm-%d-%d" % (i, k), "uuid": "00000000-0000-0000-0000-%012d" % (i * 100 + k),
                 "state": rnd.choice(("running", "running", "shut off")), "vcpus": rnd.choice((1, 2, 4, 8)),
                 "memory_mb": rnd.choice((1024, 2048, 4096, 8192)), "migration": None}
                for k in range(rnd.randint(0, 3))]
        alloc_cpu = rnd.randint(0, int(cpus * 4 * 1.02))
        alloc_mem = rnd.randint(0, mem)
        claimed = rnd.random() < 0.1
        hv = {
            "hostname": name, "arch": "aarch64" if rnd.random() < 0.01 else "x86_64", "cpu_model": "EPYC-Milan",
            "cpus": cpus, "memory_mb": mem, "free_memory_mb": max(mem - alloc_mem, 0),
            "libvirt_version": "9.0.0", "hypervisor_version": "7.2.0",
            "allocated_vcpus": alloc_cpu, "allocated_memory_mb": alloc_mem,
            "instances_path": "/var/lib/libvirt/images",
            "free_disk_bytes": rnd.choice((rnd.randint(1, 30), rnd.randint(100, 4000))) * GIB,
            "bridges": ["br-mgmt"] if rnd.random() < 0.02 else ["br-mgmt", "br-vm"],
            "networks": [], "domains": doms,
            "claimed_vcpus": rnd.choice((2, 4, 8)) if claimed else 0,
            "claimed_memory_mb": rnd.choice((2048, 4096, 8192)) if claimed else 0,
            "claimed_disk_bytes": rnd.choice((6, 20, 40)) * GIB if claimed else 0,
        }
        results[name] = {"changed": False, "hypervisor": hv, "instance": None}
        roll = rnd.random()
        if roll < 0.01:
            options[name] = {"maintenance": True}
        elif roll < 0.015:
            options[name] = {"enabled": False}
        elif roll < 0.05:
            options[name] = {"cpu_allocation_ratio": rnd.choice((1.0, 2.0, 8.0)),
                             "reserved_host_memory_mb": rnd.choice((1024, 4096))}
    results["hv000000"]["instance"] = instance()
    return results, options


def run_scheduler(report, profile):
    schedule = FilterModule().filters()["resize_schedule"]
    rows = []
    timings = {}
    for n in profile["sched_sizes"]:
        results, options = synthetic(n)
        times = []
        out = None
        for _rep in range(profile["sched_repeats"]):
            t0 = time.perf_counter()
            out = schedule(results, "hv000000", instance(), FLAVOR, host_options=options, target_host="",
                           allow_same_host=False, weights={"ram": 1.0, "cpu": 0.0, "disk": 0.0})
            times.append(time.perf_counter() - t0)
        if len(out["ranked"]) + len(out["rejected"]) != n or out["host"] != out["ranked"][0] \
                or out["host"] in out["rejected"]:
            raise WrongResult("resize_schedule over %d hosts: ranked + rejected do not add up" % n)
        best = _independent_best(results, options)
        if out["host"] != best:
            raise WrongResult("resize_schedule over %d hosts chose %s, a plain recount says %s"
                              % (n, out["host"], best))
        gc.disable()
        try:
            t0 = time.perf_counter()
            schedule(results, "hv000000", instance(), FLAVOR, host_options=options)
            no_gc = time.perf_counter() - t0
        finally:
            gc.enable()
        med = statistics.median(times)
        timings[n] = med
        rows.append(("{:,}".format(n), fmt_s(med, 3), fmt_s(max(times), 3), fmt_s(no_gc, 3), "%.1f" % (med / n * 1e6),
                     "{:,}".format(len(out["ranked"])), "{:,}".format(len(out["rejected"])), out["host"]))
    report.table("3. Scheduler: resize_schedule over synthetic virt_host_facts results (median of %d calls)"
                 % profile["sched_repeats"],
                 ("hosts", "seconds", "slowest", "GC off", "us per host", "candidates", "rejected", "chosen"),
                 rows,
                 notes=["Pure Python in the controller's process (%s); the facts themselves would come from one "
                        "virt_host_facts run per host, which is not measured here. The choice is checked against "
                        "a plain recount of capacity and free RAM. `GC off`: one more call with Python's cyclic "
                        "garbage collector disabled, to show what of the growth is the collector walking the "
                        "records." % _python()])
    if TARGET_SIZE in timings:
        report.target("3 scheduler", "under %.1f s at %s hosts" % (TARGET_SECONDS, "{:,}".format(TARGET_SIZE)),
                      "%.3f s" % timings[TARGET_SIZE], timings[TARGET_SIZE] < TARGET_SECONDS)
    run_place_many(report, profile)


FLAVORS = ((2, 4096), (4, 8192), (8, 16384))


def batch(results, options, n, seed=5):
    """n resizes of the fleet's VMs, as a batch filter would hand them to place_many: mostly to another
    host, a fifth allowed in place (some of those named in place with target_host), the VMs of 10 drained
    hosts (no destination for anyone), 1% with another target host, and 1 in 200 too big for any host."""
    rnd = random.Random(seed)
    up = sorted(h for h, r in results.items() if not r.get("failed") and h not in options)
    drained = rnd.sample(up, 10)
    vms = [(h, d) for h in drained for d in results[h]["hypervisor"]["domains"]]
    others = [(h, d) for h in up if h not in drained for d in results[h]["hypervisor"]["domains"]]
    vms += rnd.sample(others, n - len(vms))
    inst = instance()
    refusals, paths = _move_review(inst, [])
    items = []
    for i, (host, dom) in enumerate(vms):
        vcpus, memory_mb = (600, 2 ** 21) if i % 200 == 199 else rnd.choice(FLAVORS)
        allow = host not in drained and rnd.random() < 0.2
        roll = rnd.random()
        target = (host if allow else None) if roll < 0.02 else rnd.choice(up) if roll < 0.03 else None
        items.append({"key": dom["name"], "source": host,
                      "request": {"vcpus": vcpus, "memory_mb": memory_mb, "disk_bytes": 6 * GIB},
                      "current": {"vcpus": dom["vcpus"], "memory_mb": dom["memory_mb"]},
                      "allow_same_host": allow, "target_host": target, "exclude": drained,
                      "vm_reasons": _vm_reasons(dict(inst, name=dom["name"]), results, host, paths, refusals)})
    return items


def run_place_many(report, profile):
    results, options = synthetic(MANY_HOSTS)
    items = batch(results, options, MANY_VMS)
    times, plan = [], None
    for _rep in range(profile["sched_repeats"]):
        t0 = time.perf_counter()
        plan = place_many(results, items, host_options=options, weights={"ram": 1.0, "cpu": 0.0, "disk": 0.0})
        times.append(time.perf_counter() - t0)
    _check_plan(results, options, items, plan)
    gc.disable()
    try:
        t0 = time.perf_counter()
        place_many(results, items, host_options=options)
        no_gc = time.perf_counter() - t0
    finally:
        gc.enable()
    med = statistics.median(times)
    placed = [p for p in plan if p["host"]]
    in_place = sum(1 for p, it in zip(plan, items) if p["host"] == it["source"])
    rows = [("{:,}".format(len(items)), "{:,}".format(len(results)), fmt_s(med, 3), fmt_s(max(times), 3),
             fmt_s(no_gc, 3), "%.0f" % (med / len(items) * 1e6), "{:,}".format(len(placed)), "{:,}".format(in_place),
             "{:,}".format(len(plan) - len(placed)), "{:,}".format(len(set(p["host"] for p in placed))))]
    report.table("3. Scheduler: place_many, a batch of %s VMs over %s hosts (median of %d calls)"
                 % ("{:,}".format(len(items)), "{:,}".format(len(results)), profile["sched_repeats"]),
                 ("VMs", "hosts", "seconds", "slowest", "GC off", "us per VM", "placed", "in place", "not placed",
                  "hosts used"),
                 rows,
                 notes=["The fleet above; %d of the VMs are those of 10 drained hosts (excluded as destinations "
                        "for every VM of the batch), %d name their own host (in place) and %d another, a fifth may "
                        "stay in place, and %d are too big for any host (for each of those every host is asked, to "
                        "say why: they cost what one resize_schedule call does). Each placement counts the ones "
                        "before it; the plan is checked against a plain recount of every host's capacity. Building "
                        "the items (the VM-specific checks of resize.py, once per VM) is not measured."
                        % (sum(1 for it in items if it["source"] in it["exclude"]),
                           sum(1 for it in items if it["target_host"] and it["target_host"] == it["source"]),
                           sum(1 for it in items if it["target_host"] and it["target_host"] != it["source"]),
                           sum(1 for it in items if it["request"]["vcpus"] == 600))])
    report.target("3 place_many", "under %.1f s for %s VMs over %s hosts"
                  % (MANY_SECONDS, "{:,}".format(MANY_VMS), "{:,}".format(MANY_HOSTS)), "%.3f s" % med,
                  med < MANY_SECONDS)


def _check_plan(results, options, items, plan):
    """Recount, without schedule.py: no host overbooked, none used that is down, off, drained or unfit."""
    if [p["key"] for p in plan] != [it["key"] for it in items]:
        raise WrongResult("place_many: the plan is not in the items' order")
    used = {}
    for it, p in zip(items, plan):
        host = p["host"]
        if host is None:
            if it["request"]["vcpus"] != 600 and not it["target_host"]:
                raise WrongResult("place_many: %s was not placed, though the fleet has room: %s"
                                  % (it["key"], p["error"][:200]))
            continue
        opts = options.get(host, {})
        hv = results[host].get("hypervisor") or {}
        arch = results[it["source"]]["hypervisor"]["arch"]
        if results[host].get("failed") or opts.get("maintenance") or opts.get("enabled") is False \
                or host in it["exclude"] or (host == it["source"] and not it["allow_same_host"]) \
                or (it["target_host"] or host) != host or hv["arch"] != arch or "br-vm" not in hv["bridges"]:
            raise WrongResult("place_many put %s on %s, which it may not use" % (it["key"], host))
        need = dict(it["request"])
        if host == it["source"]:
            need["vcpus"] = max(need["vcpus"] - it["current"]["vcpus"], 0)
            need["memory_mb"] = max(need["memory_mb"] - it["current"]["memory_mb"], 0)
        if need != p["need"]:
            raise WrongResult("place_many: %s needs %s on %s, the plan says %s" % (it["key"], need, host, p["need"]))
        total = used.setdefault(host, {"vcpus": 0, "memory_mb": 0, "disk_bytes": 0})
        for key in total:
            total[key] += need[key]
    for host, total in used.items():
        opts = options.get(host, {})
        hv = results[host]["hypervisor"]
        cpu = hv["allocated_vcpus"] + hv["claimed_vcpus"] + total["vcpus"]
        mem = hv["allocated_memory_mb"] + hv["claimed_memory_mb"] + total["memory_mb"]
        disk = hv["claimed_disk_bytes"] + total["disk_bytes"]
        if cpu > int(hv["cpus"] * opts.get("cpu_allocation_ratio", 4.0)) \
                or mem > hv["memory_mb"] - opts.get("reserved_host_memory_mb", 512) or disk > hv["free_disk_bytes"]:
            raise WrongResult("place_many overbooked %s: %d vCPUs, %d MiB, %d bytes of disk"
                              % (host, cpu, mem, disk))


def _python():
    import platform
    return "Python %s" % platform.python_version()


def _independent_best(results, options):
    """The host the filter should pick, recomputed without the filter's code paths (RAM weigher)."""
    best, best_key = None, None
    need_cpu, need_mem, need_disk = FLAVOR["vcpus"], FLAVOR["memory_mb"], 6 * GIB
    for host, res in results.items():
        opts = options.get(host, {})
        if host == "hv000000" or res.get("failed") or opts.get("maintenance") or opts.get("enabled") is False:
            continue
        hv = res["hypervisor"]
        if hv["arch"] != "x86_64" or "br-vm" not in hv["bridges"]:
            continue
        ratio = opts.get("cpu_allocation_ratio", 4.0)
        reserved = opts.get("reserved_host_memory_mb", 512)
        if hv["allocated_vcpus"] + hv["claimed_vcpus"] + need_cpu > int(hv["cpus"] * ratio):
            continue
        if hv["allocated_memory_mb"] + hv["claimed_memory_mb"] + need_mem > hv["memory_mb"] - reserved:
            continue
        if need_disk > hv["free_disk_bytes"] - hv["claimed_disk_bytes"]:
            continue
        key = (-(hv["memory_mb"] - hv["allocated_memory_mb"] - hv["claimed_memory_mb"]), host)
        if best_key is None or key < best_key:
            best, best_key = host, key
    return best
