"""Benchmark 4: six VMs resized at once across the three hosts, with room for fewer than could pile up.

Two bench VMs start on each host (1 vCPU, 128 MiB). Each is resized to m1.small (2 vCPU, 256 MiB)
by its own ansible-playbook process, all six started together, the scheduler free to choose.
A bench inventory gives every host room for exactly ROOM arrivals: its vCPU allocation ratio is set
(host var hypervisor_cpu_allocation_ratio) so that its vCPU capacity is what it uses now plus
ROOM x 2. Four VMs may pick any given host (all but its own two) and the scheduler's RAM weigher
sends simultaneous requests to the same best host, so the claims must turn some away: either the
scheduler sees the claims already made, or the destination's re-check under its lock refuses.
A resize refused that way is rolled back by the role and run once more (a second wave).

Checked before confirm (the peak: sources are kept until confirm): each VM is running at the new
size on one other host and shut off on its source; no host holds more vCPUs than its capacity or
more memory than its RAM limit, counting every defined domain (the kept sources too) and every open
claim whose VM is not defined there yet. Then all six are confirmed (concurrently) and checked again.

Then the same six (made again where they started) in ONE run (playbooks/resize.yml with
resize_requests: facts once, placed at once, confirm=true), and six runs one after another, each with
its wall time and the controller's CPU; the same checks on where each VM ends.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import threading
import time

import yaml

from .common import (
    HOSTS,
    PREFIX,
    BenchError,
    WrongResult,
    bed,
    bed_info,
    failure_summary,
    finish_playbook,
    fmt_s,
    helper,
    hexec,
    playbook,
    start_playbook,
)

ROOM = 3                   # arrivals each host has room for
FLAVOR = "m1.small"
NEW_VCPUS, NEW_MEM = 2, 256
START = {PREFIX + "b1": "hv1", PREFIX + "b2": "hv1", PREFIX + "b3": "hv2", PREFIX + "b4": "hv2",
         PREFIX + "b5": "hv3", PREFIX + "b6": "hv3"}
SINGLE = PREFIX + "b0"
DEFAULT_RESERVED_MB = 512  # the product's default reserve (flavor.py), RAM ratio 1.0


def parallel(fn, items):
    """fn(item) for every item in threads; returns {item: result}; re-raises the first error."""
    out, errors = {}, []

    def one(item):
        try:
            out[item] = fn(item)
        except Exception as exc:  # collected, re-raised below
            errors.append(exc)
    threads = [threading.Thread(target=one, args=(i,)) for i in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out


def children_cpu():
    """CPU seconds (user + sys) of this process's finished children: the playbooks on the controller."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def facts(hosts=HOSTS):
    return parallel(lambda h: helper(h, "hostfacts.py"), hosts)


def make_guests(names_hosts):
    for name, host in names_hosts.items():
        bed("guest", name, "--host", host, "--vcpus", "1", "--memory-mb", "128", "--disk-gb", "1", "--no-start")
    parallel(lambda n: hexec(names_hosts[n], ["virsh", "-q", "-c", "qemu:///system", "start", n]), list(names_hosts))
    parallel(lambda n: bed("wait-ready", n, "--host", names_hosts[n], "--timeout", "180"), list(names_hosts))


def plan_of(stdout):
    """The scheduler's view from the role's 'Show the plan': candidates in order, hosts rejected."""
    cand = re.search(r"candidates in order: ([A-Za-z0-9_, .-]*)", stdout)
    rej = re.search(r"rejected: ([^'\"\n]*)", stdout)
    return (cand.group(1).strip() if cand else "-"), (rej.group(1).strip() if rej else "-")


def why_short(why):
    """The gist of a failed resize: a claim refused by the destination, or no valid host."""
    if not why:
        return None
    m = re.search(r"destination cannot take this VM: (.*?)(?:\)|\.\s|$)", why)
    if m:
        return "refused by the destination's claim check: %s)" % m.group(1)
    m = re.search(r"no valid host for VM \S+ \([^)]*\): (.*?)(?:\. |\.?$)", why)
    if m:
        return "no valid host: %s" % m.group(1)
    return why[:200]


def dest_of(res, vm):
    """Where the play put the VM: the finish task's record (dest, status finished)."""
    for ev in res["timeline"]:
        mig = (ev.get("result") or {}).get("migration") or {}
        if ev["ev"] == "ok" and mig.get("status") == "finished":
            return mig.get("dest")
    m = re.search(r"VM %s now on (\S+) \(" % re.escape(vm), res["stdout"])
    return m.group(1) if m else None


def bench_inventory(workdir, ratios):
    inv = os.path.join(workdir, "inventory")
    shutil.copytree(os.path.dirname(bed_info()["inventory"]), inv)
    os.makedirs(os.path.join(inv, "host_vars"), exist_ok=True)
    for h, ratio in ratios.items():
        with open(os.path.join(inv, "host_vars", "%s.yml" % h), "w") as fh:
            yaml.safe_dump({"hypervisor_cpu_allocation_ratio": ratio}, fh)
    return os.path.join(inv, "inventory.yml")


def commitments(f, others_then=None):
    """vCPUs and MiB a host is committed to: every defined domain plus open claims of VMs not defined here."""
    hv = f["hypervisor"]
    defined = {d["name"] for d in hv["domains"]}
    doms = hv["domains"]
    if others_then is not None:  # others' domains as they were at the start, ours as they are now
        doms = [d for d in doms if d["name"].startswith(PREFIX)] + others_then
    pending = [c["claim"] for c in f["claims"] if c["instance"] not in defined]
    return (sum(d["vcpus"] for d in doms) + sum(int(c.get("vcpus", 0)) for c in pending),
            sum(d["memory_mb"] for d in doms) + sum(int(c.get("memory_mb", 0)) for c in pending))


def run_batch(report, profile, workdir):
    make_guests(dict(START, **{SINGLE: "hv1"}))

    # One VM alone first, same conditions (the six others idle on the bed), default inventory.
    cpu0 = children_cpu()
    single = playbook("resize.yml", os.path.join(workdir, "single.jsonl"), instance=SINGLE, flavor=FLAVOR)
    single_cpu = children_cpu() - cpu0
    if single["rc"] != 0:
        raise BenchError("single resize of %s failed: %s" % (SINGLE, failure_summary(single)))
    t0 = time.time()
    conf = playbook("confirm.yml", os.path.join(workdir, "single-confirm.jsonl"), instance=SINGLE)
    single_confirm = time.time() - t0
    if conf["rc"] != 0:
        raise BenchError("confirm of %s failed: %s" % (SINGLE, failure_summary(conf)))
    bed("rm-guest", SINGLE)

    before = facts()
    caps, ratios, others0, used_before = {}, {}, {}, {}
    for h, f in before.items():
        hv = f["hypervisor"]
        used = hv["allocated_vcpus"] + hv["claimed_vcpus"]
        caps[h] = used + ROOM * NEW_VCPUS
        ratios[h] = caps[h] / hv["cpus"]
        if int(hv["cpus"] * ratios[h]) != caps[h]:
            raise BenchError("cannot express a capacity of %d vCPUs as a ratio of %d CPUs" % (caps[h], hv["cpus"]))
        others0[h] = [d for d in hv["domains"] if not d["name"].startswith(PREFIX)]
        used_before[h] = "%d = ours %d + others' %d + claims %d" % (
            used, sum(d["vcpus"] for d in hv["domains"] if d["name"].startswith(PREFIX)),
            sum(d["vcpus"] for d in others0[h]), hv["claimed_vcpus"])
    inventory = bench_inventory(workdir, ratios)

    attempts = {vm: [] for vm in START}
    wall0 = time.time()
    cpu0 = children_cpu()
    pending = list(START)
    for wave in (1, 2):
        if not pending:
            break
        procs = {vm: start_playbook("resize.yml", os.path.join(workdir, "w%d-%s.jsonl" % (wave, vm)), inventory,
                                    instance=vm, flavor=FLAVOR) for vm in pending}
        for vm, (proc, t_start) in procs.items():
            res = finish_playbook(proc, t_start, os.path.join(workdir, "w%d-%s.jsonl" % (wave, vm)))
            res["wave"] = wave
            res["plan"] = plan_of(res["stdout"])
            res["dest"] = dest_of(res, vm) if res["rc"] == 0 else None
            res["why"] = None if res["rc"] == 0 else why_short(failure_summary(res))
            attempts[vm].append(res)
        pending = [vm for vm in pending if attempts[vm][-1]["rc"] != 0]
    wall = time.time() - wall0
    batch_cpu = children_cpu() - cpu0

    peak = facts()
    problems, overbooked, unplaced = [], [], []
    where = {vm: {h: d["state"] for h, f in peak.items() for d in f["hypervisor"]["domains"] if d["name"] == vm}
             for vm in START}
    size = {vm: {h: (d["vcpus"], d["memory_mb"]) for h, f in peak.items() for d in f["hypervisor"]["domains"]
                 if d["name"] == vm} for vm in START}
    for vm, src in START.items():
        dest = attempts[vm][-1]["dest"]
        if dest is None:
            unplaced.append(vm)
            if where[vm] != {src: "running"}:
                raise WrongResult("%s failed to resize and is not back on %s running: %s" % (vm, src, where[vm]))
            continue
        if dest == src or where[vm] != {src: "shutoff", dest: "running"} or size[vm][dest] != (NEW_VCPUS, NEW_MEM):
            raise WrongResult("%s should run on %s at %d vCPU/%d MiB with its source kept off on %s; found %s %s"
                              % (vm, dest, NEW_VCPUS, NEW_MEM, src, where[vm], size[vm]))
    others_changed = []
    double_counted = []
    host_rows = []
    room = {}
    for h in HOSTS:
        f = peak[h]
        hv = f["hypervisor"]
        now_others = sorted((d["name"], d["vcpus"]) for d in hv["domains"] if not d["name"].startswith(PREFIX))
        if now_others != sorted((d["name"], d["vcpus"]) for d in others0[h]):
            others_changed.append(h)
        cpu, mem = commitments(f, others0[h])
        ram_cap = hv["memory_mb"] - DEFAULT_RESERVED_MB
        arrivals = sorted(vm for vm in START if attempts[vm][-1]["dest"] == h)
        product_view = hv["allocated_vcpus"] + hv["claimed_vcpus"]
        true_cpu, _mem = commitments(f)
        if product_view > true_cpu:
            double_counted.append("%s counts %d vCPUs for %d committed" % (h, product_view, true_cpu))
        if cpu > caps[h] or mem > ram_cap:
            overbooked.append("%s: %d vCPU of %d, %d MiB of %d" % (h, cpu, caps[h], mem, ram_cap))
        room[h] = (caps[h] - cpu, cpu, product_view)
        host_rows.append((h, used_before[h], "%d" % caps[h], "%d" % cpu, "%d / %d" % (mem, ram_cap),
                          ", ".join(arrivals) or "-",
                          "%d + %d claimed = %d" % (hv["allocated_vcpus"], hv["claimed_vcpus"], product_view)))

    for vm in unplaced:
        fits = ["%s (%d of %d vCPUs committed, the product's facts said %d)" % (h, room[h][1], caps[h], room[h][2])
                for h in HOSTS if h != START[vm] and room[h][0] >= NEW_VCPUS]
        yet = "; yet it fitted on " + ", ".join(fits) if fits else ""
        problems.append("%s was not resized (%s)%s" % (vm, attempts[vm][-1]["why"], yet))

    # Confirm all six at once, then check the end state.
    t0 = time.time()
    confirms = {vm: start_playbook("confirm.yml", os.path.join(workdir, "c-%s.jsonl" % vm), instance=vm)
                for vm in START if attempts[vm][-1]["dest"]}
    confirm_res = {vm: finish_playbook(p, t, os.path.join(workdir, "c-%s.jsonl" % vm))
                   for vm, (p, t) in confirms.items()}
    confirm_wall = time.time() - t0
    after = facts()
    for vm in confirms:
        placed = {h: d["state"] for h, f in after.items() for d in f["hypervisor"]["domains"] if d["name"] == vm}
        dest = attempts[vm][-1]["dest"]
        if confirm_res[vm]["rc"] != 0:
            problems.append("confirm of %s failed: %s" % (vm, failure_summary(confirm_res[vm])))
        elif placed != {dest: "running"}:
            raise WrongResult("after confirm %s should run on %s only; found %s" % (vm, dest, placed))
    left = ["%s: %s" % (h, c["instance"]) for h, f in after.items() for c in f["claims"]
            if c["instance"] in START]
    if left:
        problems.append("claims left after confirm: %s" % ", ".join(left))

    vm_rows = []
    for vm, src in START.items():
        for a in attempts[vm]:
            vm_rows.append((vm, "%d" % a["wave"], src, a["dest"] or "-", fmt_s(a["seconds"]),
                            a["plan"][0], a["why"] or "resized; scheduler rejected %s" % a["plan"][1]))
    batch_sum = sum(a["seconds"] for v in attempts.values() for a in v)
    refused = [(vm, a["why"]) for vm, v in attempts.items() for a in v if a["rc"] != 0]
    by_lock = [vm for vm, why in refused if "destination's claim check" in (why or "")]
    report.table("4. Batch: 6 VMs resized concurrently to %s across hv1..hv3 (one ansible-playbook each)" % FLAVOR,
                 ("VM", "wave", "from", "to", "seconds", "candidates seen",
                  "outcome / hosts rejected by the scheduler"),
                 vm_rows)
    report.table("4. Batch: hosts at the peak (before confirm)",
                 ("host", "vCPUs in use before", "vCPU capacity", "vCPUs committed", "MiB committed / limit",
                  "arrivals", "product's facts: allocated + claimed vCPUs"),
                 host_rows,
                 notes=["Capacity = vCPUs in use before the batch + room for %d arrivals of %d vCPUs (bench "
                        "inventory, hypervisor_cpu_allocation_ratio per host). Committed = every defined domain "
                        "(the kept sources too) + open claims of VMs not defined on the host yet%s."
                        % (ROOM, NEW_VCPUS, "; others' guests changed meanwhile on %s, counted as at the start"
                           % ", ".join(others_changed) if others_changed else "")]
                 + (["The product's own facts count more than is committed (%s): a VM that finished on a host "
                     "is counted both as a defined domain and as an open claim until confirm."
                     % "; ".join(double_counted)] if double_counted else []))
    report.table("4. Batch: times",
                 ("what", "seconds"),
                 [("batch wall time (all waves, 6 concurrent playbooks)", fmt_s(wall)),
                  ("sum of the batch's own playbook times", fmt_s(batch_sum)),
                  ("one VM alone (same VM size, same bed, measured just before)", fmt_s(single["seconds"])),
                  ("6 x one VM alone (an estimate; measured below)", fmt_s(6 * single["seconds"])),
                  ("controller CPU (user+sys) of the batch's playbooks / of one alone",
                   "%s / %s" % (fmt_s(batch_cpu), fmt_s(single_cpu))),
                  ("6 concurrent confirms, wall time (one alone: %.2f s)" % single_confirm, fmt_s(confirm_wall))],
                 notes=["Refused on the first try: %d (by the destination's re-check under its lock: %d); "
                        "those were rolled back by the role and run again in wave 2." % (len(refused), len(by_lock))]
                 + (["Problems: " + "; ".join(problems)] if problems else []))
    if overbooked:
        raise WrongResult("overbooked: " + "; ".join(overbooked))
    placed_ok = not problems
    report.target("4 batch", "all 6 end where their playbook said, no host over its limits",
                  "%d of 6 moved, %d refused then retried, no host overbooked"
                  % (sum(1 for v in attempts.values() if v[-1]["dest"]), len(refused)), placed_ok)
    one_run_and_sequential(report, workdir, inventory, caps, wall, batch_cpu, len(refused))


def _ended_well(vms, confirmed):
    """Each VM runs at the new size on exactly one host other than its start (its source gone when
    confirmed, else kept shut off). Returns {vm: dest}."""
    now = facts()
    out = {}
    for vm, src in vms.items():
        placed = {h: (d["state"], d["vcpus"], d["memory_mb"]) for h, f in now.items()
                  for d in f["hypervisor"]["domains"] if d["name"] == vm}
        dests = [h for h, v in placed.items() if v == ("running", NEW_VCPUS, NEW_MEM) and h != src]
        kept = {} if confirmed else {src: placed.get(src, ("-",))[0]}
        if len(dests) != 1 or dict((h, v[0]) for h, v in placed.items() if h != dests[0]) != \
                dict((h, "shutoff") for h in kept):
            raise WrongResult("%s should run on one other host at %d vCPU/%d MiB; found %s" % (vm, NEW_VCPUS, NEW_MEM,
                                                                                               placed))
        out[vm] = dests[0]
    return out


def _fresh_guests():
    for vm in START:
        bed("rm-guest", vm)
    make_guests(START)


def one_run_and_sequential(report, workdir, inventory, caps, concurrent_wall, concurrent_cpu, concurrent_refused):
    """The same six in one run of the batch, then one after another; wall time and controller CPU."""
    _fresh_guests()
    requests = [{"instance": vm, "flavor": FLAVOR} for vm in START]
    cpu0 = children_cpu()
    res = playbook("resize.yml", os.path.join(workdir, "one-run.jsonl"), inventory, resize_requests=requests,
                   resize_parallel=6, resize_parallel_per_host=3, confirm=True)
    one_cpu = children_cpu() - cpu0
    if res["rc"] != 0:
        raise BenchError("the batch in one run failed: %s" % failure_summary(res))
    line = re.compile(r'"(%s\S+): hv\d -> (hv\d), ' % re.escape(PREFIX))
    planned = {m.group(1): m.group(2) for m in line.finditer(res["stdout"])}
    got = _ended_well(START, confirmed=True)
    if got != planned:
        raise WrongResult("the batch's VMs did not land where its plan said: plan %s, found %s" % (planned, got))
    arrivals = {h: sum(1 for d in got.values() if d == h) for h in HOSTS}
    over = [h for h in HOSTS if arrivals[h] > ROOM]
    if over:
        raise WrongResult("the batch's plan sent more than %d VMs to %s" % (ROOM, ", ".join(over)))

    _fresh_guests()
    seq_wall, seq_cpu = 0.0, 0.0
    for vm in START:
        cpu0 = children_cpu()
        one = playbook("resize.yml", os.path.join(workdir, "seq-%s.jsonl" % vm), inventory, instance=vm,
                       flavor=FLAVOR, confirm=True)
        seq_cpu += children_cpu() - cpu0
        seq_wall += one["seconds"]
        if one["rc"] != 0:
            raise BenchError("sequential resize of %s failed: %s" % (vm, failure_summary(one)))
    _ended_well(START, confirmed=True)
    report.table("4. Batch: the same 6 VMs three ways (wall time, controller CPU user+sys)",
                 ("how", "wall s", "controller CPU s", "refused and run again"),
                 [("one run: playbooks/resize.yml resize_requests (confirm=true)", fmt_s(res["seconds"]),
                   fmt_s(one_cpu), "0"),
                  ("6 concurrent ansible-playbook runs (confirmed after, not counted)", fmt_s(concurrent_wall),
                   fmt_s(concurrent_cpu), "%d" % concurrent_refused),
                  ("6 runs one after another (confirm=true)", fmt_s(seq_wall), fmt_s(seq_cpu), "0")],
                 notes=["One run: arrivals per host %s (room for %d each), every VM where the plan said."
                        % (", ".join("%s %d" % kv for kv in sorted(arrivals.items())), ROOM)])
    report.target("4 batch", "one run: every VM where its plan said, no second wave, no host over its room",
                  "6 of 6 placed by the plan", got == planned and not over)
    report.target("4 batch", "6 concurrent runs faster than 6 one after another (both measured)",
                  "%.1f s vs %.1f s" % (concurrent_wall, seq_wall), concurrent_wall < seq_wall)
    report.target("4 batch", "one batch run faster than 6 concurrent runs (its confirms included)",
                  "%.1f s vs %.1f s" % (res["seconds"], concurrent_wall), res["seconds"] < concurrent_wall)
