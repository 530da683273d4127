# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The scheduler's per-host rules, and many VMs placed at once. Private to hypervisor.resize. Pure: no I/O.

`host_reasons` (filter) and `weigh` (weigher) are the one implementation of the rules: the
resize_schedule filter asks them about every host for one VM, `place_many` about the hosts of a
whole batch, each placement counted by the ones after it. What is specific to a VM (its refusals,
host paths, TPM, architecture, bridges, networks) comes in as a callable from the caller, so this
file needs no domain parsing.
"""

from __future__ import annotations

import heapq

from .errors import ResizeError
from .flavor import capacity_reasons

DEFAULT_WEIGHTS = {"ram": 1.0, "cpu": 0.0, "disk": 0.0}
# Per-host options (host variables) that are capacity settings.
LIMIT_OPTIONS = ("cpu_allocation_ratio", "ram_allocation_ratio", "disk_allocation_ratio", "reserved_host_memory_mb")
CLAIM_KEYS = (("vcpus", "claimed_vcpus"), ("memory_mb", "claimed_memory_mb"), ("disk_bytes", "claimed_disk_bytes"))

IN_MAINTENANCE = "in maintenance (hypervisor_maintenance is set)"
DISABLED = "disabled (hypervisor_enabled is false)"
DRAINED = "being drained: not a destination in this batch"
SOURCE = "is the source host"
# How many hosts an item's error names (all of them are in its reasons).
ERROR_HOSTS = 10


class Refusals(list):
    """VM-specific reasons that rule a host out whatever its capacity: returned by a `vm_reasons`
    callable, they are the host's only reasons (no capacity figures are added after them)."""


def option_limits(opts):
    """A host's own capacity settings among its options (host variables)."""
    return {k: opts[k] for k in LIMIT_OPTIONS if opts.get(k) is not None}


def full_weights(weights=None):
    """The weigher's multipliers: ram, cpu, disk (defaults: free RAM only)."""
    return dict(DEFAULT_WEIGHTS, **(weights or {}))


def need_on(host, source, request, current=None):
    """What a VM of size `request` needs on `host`: all of it, or on its own host (in place) only
    the increase of vCPUs and memory over its current size, which that host already counts. The disk
    figure is the request's either way."""
    if host != source:
        return request
    current = current or {}
    return dict(request, vcpus=max(request["vcpus"] - int(current.get("vcpus", 0)), 0),
                memory_mb=max(request["memory_mb"] - int(current.get("memory_mb", 0)), 0))


def failure(res):
    """Why a host has no usable facts, or None. `res` as virt_host_facts returned it, or as the
    filter's _facts leaves it ({"failed": message})."""
    failed = res.get("failed")
    if not failed and not res.get("unreachable"):
        return None
    return res.get("msg") or (failed if failed is not True else None) or "unreachable"


def fixed_reasons(res, opts):
    """The reasons that rule a host out for every VM: no facts, maintenance, disabled. [] if none."""
    failed = failure(res)
    if failed:
        return ["facts unavailable: %s" % failed]
    if opts.get("maintenance"):
        return [IN_MAINTENANCE]
    marker = (res.get("hypervisor") or {}).get("maintenance")
    if marker and not isinstance(marker, dict):
        # Whatever a host says about itself only ever takes that host out (rule C3).
        return ["in maintenance (its marker is malformed: %.60r)" % (marker,)]
    if marker and not marker.get("returning") and not opts.get("returning"):
        # The host's own marker (a drain): it can only take itself out, never another host.
        return ["in maintenance since %s (%s)%s" % (
            marker.get("since") or "?", marker.get("reason") or "maintenance",
            "; the drain's way back ends it" if marker.get("drain_id") else
            "; virt_host_maintenance state=absent ends it")]
    if opts.get("enabled") is False:
        return [DISABLED]
    return []


def host_reasons(host, res, opts, *, source, need, current=None, allow_same_host=False, exclude=(),
                 vm_reasons=None):
    """Why `host` cannot take the VM; [] when it can.

    res: the host's virt_host_facts result; opts: its options (maintenance, enabled, ratios, reserve).
    need: the VM's full request {vcpus, memory_mb, disk_bytes}; current: its size now {vcpus, memory_mb}
    (on its own host only the increase is needed: need_on). exclude: hosts not to use (being drained).
    vm_reasons(host, hv): the VM-specific reasons (a Refusals list ends the host's reasons).
    In this order: no facts, maintenance, disabled, drained, the source host (unless allowed), then
    the VM's own reasons, then capacity (flavor.capacity_reasons with the host's own limits).
    """
    return _host_reasons(host, res, opts, source, need_on(host, source, need, current), allow_same_host, exclude,
                         vm_reasons)[0]


def _host_reasons(host, res, opts, source, need, allow_same_host, exclude, vm_reasons):
    """host_reasons for the need on this host, and whether its capacity fell short of that need."""
    reasons = fixed_reasons(res, opts)
    if reasons:
        return reasons, False
    if host in exclude:
        return [DRAINED], False
    if host == source and not allow_same_host:
        return [SOURCE], False
    hv = res.get("hypervisor") or {}
    if vm_reasons is not None:
        own = vm_reasons(host, hv)
        if isinstance(own, Refusals):
            return list(own), False
        reasons = list(own)
    limits = option_limits(opts)
    short = capacity_reasons(dict(hv, **limits) if limits else hv, need)
    return reasons + short, bool(short)


def weigh(hv, weights):
    """A candidate's weight (higher is better): free RAM (MiB), free vCPUs at 4 per CPU, free disk
    (GiB), each times its weight; open claims count as used."""
    free_ram = hv["memory_mb"] - hv.get("allocated_memory_mb", 0) - hv.get("claimed_memory_mb", 0)
    free_cpu = hv["cpus"] * 4 - hv.get("allocated_vcpus", 0) - hv.get("claimed_vcpus", 0)
    free_disk = (hv.get("free_disk_bytes", 0) - hv.get("claimed_disk_bytes", 0)) / (1024 ** 3)
    return weights["ram"] * free_ram + weights["cpu"] * free_cpu + weights["disk"] * free_disk


def claimed(res, need):
    """A copy of the host's result with `need` added to its open claims (the input is left as it is)."""
    hv = dict(res.get("hypervisor") or {})
    for key, claim in CLAIM_KEYS:
        hv[claim] = hv.get(claim, 0) + need.get(key, 0)
    return dict(res, hypervisor=hv)


def place_many(hosts, items, host_options=None, weights=None):
    """Place many VMs at once, in order, each counting the placements before it.

    hosts: {name: virt_host_facts result (with "hypervisor"), or a failed one}.
    items: [{"key", "source", "request": {vcpus, memory_mb, disk_bytes}, "current": {vcpus, memory_mb},
    "allow_same_host", "target_host", "exclude": [hosts], "vm_reasons": callable(host, hv) -> [reasons]}].
    host_options: {name: options}; weights: the weigher's multipliers (full_weights).

    Returns, in the items' order, {"key", "host", "need"} for a placed item (need: what it takes on that
    host, the increase only when in place), or {"key", "host": None, "need": its request, "reasons":
    {host: [reasons]}, "error"} for one no host can take. Never raises for an item that does not fit;
    the inputs are not changed.

    Each item takes the first host, in order of weight (heaviest first, then by name), that passes
    host_reasons with the claims so far: the same as ranking every host for it, found with a heap of
    (-weight, name) that holds each candidate's weight as it stands. Only the chosen host's weight
    changes with a placement (it is put back with its new weight); the hosts passed over for an item
    are put back unchanged.
    """
    host_options = host_options or {}
    weights = full_weights(weights)
    fixed, heap, version = {}, [], {}
    for name in sorted(hosts):
        res = hosts[name]
        if not isinstance(res, dict):
            raise ResizeError("facts of host %s are not a mapping" % name)
        reasons = fixed_reasons(res, host_options.get(name) or {})
        if reasons:
            fixed[name] = reasons
        else:
            version[name] = 0
            heap.append((-weigh(res.get("hypervisor") or {}, weights), name, 0))
    heapq.heapify(heap)
    plan = _Plan(hosts, host_options, weights, fixed, heap, version)
    return [plan.place(item) for item in items]


class _Plan:
    """place_many's state: the heap of candidates, each host's claims so far (`views`, copies made on a
    host's first placement), and per host the needs its capacity already fell short of (`short`).

    A host's free capacity only shrinks as the plan goes on, so a need at least as large, in every
    figure, as one it fell short of is refused again without asking: the host is passed over at once
    (its reasons are worked out only if the item ends up nowhere)."""

    def __init__(self, hosts, host_options, weights, fixed, heap, version):
        self.hosts, self.host_options, self.weights = hosts, host_options, weights
        self.fixed, self.heap, self.version = fixed, heap, version
        self.views, self.short = {}, {}

    def res(self, name):
        return self.views.get(name) or self.hosts[name]

    def take(self, name, need):
        self.views[name] = res = claimed(self.res(name), need)
        if min(need.get(key, 0) for key, _claim in CLAIM_KEYS) < 0:
            self.short.pop(name, None)  # it got more room: what it refused may fit now
        # Its entry in the heap (if any) is now stale; the new one supersedes it.
        self.version[name] += 1
        heapq.heappush(self.heap, (-weigh(res["hypervisor"], self.weights), name, self.version[name]))

    def place(self, item):
        key, source = item["key"], item.get("source")
        request = dict(item["request"])
        request.setdefault("disk_bytes", 0)
        current = item.get("current") or {}
        exclude = frozenset(item.get("exclude") or ())
        allow = bool(item.get("allow_same_host"))
        vm_reasons = item.get("vm_reasons")
        target = item.get("target_host")

        def reasons_of(name, need):
            return _host_reasons(name, self.res(name), self.host_options.get(name) or {}, source, need, allow,
                                 exclude, vm_reasons)

        def placed(name, need):
            self.take(name, need)
            return {"key": key, "host": name, "need": need}

        def not_placed(reasons, error):
            return {"key": key, "host": None, "need": request, "reasons": reasons, "error": error}

        if target:
            if target not in self.hosts:
                return not_placed({}, "target host %s is not among the hypervisors (%d known)"
                                  % (target, len(self.hosts)))
            need = need_on(target, source, request, current)
            reasons = reasons_of(target, need)[0]
            if reasons:
                return not_placed({target: reasons}, "target host %s cannot take %s: %s"
                                  % (target, key, "; ".join(reasons)))
            return placed(target, need)

        heap, version, short = self.heap, self.version, self.short
        passed_over, seen, skipped = [], {}, []
        chosen = None
        while heap:
            entry = heapq.heappop(heap)
            name = entry[1]
            if entry[2] != version[name]:
                continue  # superseded by the entry with its weight after a placement
            need = need_on(name, source, request, current)
            vector = (need["vcpus"], need["memory_mb"], need["disk_bytes"])
            if name in short and _covers(short[name], vector):
                skipped.append(name)
                passed_over.append(entry)
                continue
            reasons, fell_short = reasons_of(name, need)
            if not reasons:
                chosen = name
                break
            if fell_short:
                _remember(short.setdefault(name, []), vector)
            passed_over.append(entry)
            seen[name] = reasons
        for entry in passed_over:
            heapq.heappush(heap, entry)
        if chosen is not None:
            return placed(chosen, need)
        # Every candidate was tried: the reasons of all of them, then of the hosts no VM can use.
        for name in skipped:
            seen[name] = reasons_of(name, need_on(name, source, request, current))[0]
        seen.update(self.fixed)
        reasons = {h: seen[h] for h in sorted(seen)}
        named = ["%s: %s" % (h, ", ".join(r)) for h, r in list(reasons.items())[:ERROR_HOSTS]]
        more = len(reasons) - len(named)
        return not_placed(reasons, "no valid host for %s (%d vCPU, %d MiB): %s%s"
                          % (key, request["vcpus"], request["memory_mb"], "; ".join(named) or "no hypervisors",
                             "; and %d more host(s), see reasons" % more if more else ""))


SHORT_KEPT = 8


def _covers(floors, vector):
    """Whether `vector` is at least one of `floors` in every figure."""
    for floor in floors:
        if floor[0] <= vector[0] and floor[1] <= vector[1] and floor[2] <= vector[2]:
            return True
    return False


def _remember(floors, vector):
    """Add a need the host fell short of, dropping those it makes redundant (a few are kept)."""
    floors[:] = [f for f in floors if not (vector[0] <= f[0] and vector[1] <= f[1] and vector[2] <= f[2])]
    floors.append(vector)
    del floors[:-SHORT_KEPT]
