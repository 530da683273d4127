"""The scheduler's per-host rules and place_many (many VMs at once, each counting the ones before it)."""

import copy
import random

import pytest

from ansible_collections.hypervisor.resize.plugins.module_utils import schedule as s
from ansible_collections.hypervisor.resize.plugins.module_utils.errors import ResizeError

GIB = 1024 ** 3


def hv(cpus=4, memory_mb=4096, alloc_cpu=0, alloc_mem=0, disk=100 * GIB, **kw):
    d = {"cpus": cpus, "memory_mb": memory_mb, "allocated_vcpus": alloc_cpu, "allocated_memory_mb": alloc_mem,
         "free_disk_bytes": disk, "bridges": ["vmbr0"], "networks": [], "arch": "x86_64"}
    d.update(kw)
    return {"changed": False, "hypervisor": d}


def item(key, source="src", vcpus=1, memory_mb=1024, disk=GIB, **kw):
    d = {"key": key, "source": source, "request": {"vcpus": vcpus, "memory_mb": memory_mb, "disk_bytes": disk},
         "current": {"vcpus": 1, "memory_mb": 512}}
    d.update(kw)
    return d


def hosts_of(plan):
    return [p["host"] for p in plan]


# ------------------------------------------------------------------------------------------------
# host_reasons, weigh


def test_host_reasons_in_order_and_only_the_first_of_the_fixed_ones():
    kw = {"source": "src", "need": {"vcpus": 1, "memory_mb": 1024, "disk_bytes": 0}}
    assert s.host_reasons("a", {"failed": True, "msg": "ssh: no route"}, {}, **kw) == ["facts unavailable: ssh: no route"]
    assert s.host_reasons("a", {"failed": "as _facts leaves it"}, {}, **kw) == ["facts unavailable: as _facts leaves it"]
    assert s.host_reasons("a", {"unreachable": True}, {}, **kw) == ["facts unavailable: unreachable"]
    assert s.host_reasons("a", hv(), {"maintenance": True, "enabled": False}, exclude={"a"}, **kw) == [s.IN_MAINTENANCE]
    assert s.host_reasons("a", hv(), {"enabled": False}, exclude={"a"}, **kw) == [s.DISABLED]
    assert s.host_reasons("src", hv(), {}, exclude={"src"}, allow_same_host=True, **kw) == [s.DRAINED]
    assert s.host_reasons("src", hv(), {}, **kw) == ["is the source host"]
    # The VM's own reasons, then capacity; a Refusals list stands alone.
    full = hv(alloc_mem=4096)

    def own(host, facts):
        return ["bridge br-x missing"]
    got = s.host_reasons("a", full, {}, vm_reasons=own, **kw)
    assert got[0] == "bridge br-x missing" and got[1].startswith("RAM: needs 1024 MiB")
    assert s.host_reasons("a", full, {}, vm_reasons=lambda h, f: s.Refusals(["snapshots"]), **kw) == ["snapshots"]


def test_host_reasons_use_the_hosts_own_limits_and_only_the_increase_in_place():
    need = {"vcpus": 4, "memory_mb": 1024, "disk_bytes": 0}
    assert s.host_reasons("a", hv(cpus=1), {}, source="src", need=need) == []
    one_to_one = s.host_reasons("a", hv(cpus=1), {"cpu_allocation_ratio": 1.0}, source="src", need=need)
    assert "vCPUs: needs 4, 1 of 1 free" in one_to_one[0]
    # 3584 MiB allocatable; in place the VM's 512 MiB are already counted: 1024 -> needs 512 more.
    base = hv(alloc_mem=3584 - 512)
    assert s.host_reasons("src", base, {}, source="src", need=need, current={"vcpus": 4, "memory_mb": 512},
                          allow_same_host=True) == []
    assert s.host_reasons("a", base, {}, source="src", need=need)[0].startswith("RAM: needs 1024 MiB, 512 MiB free")


def test_weigh_counts_claims_and_the_chosen_multipliers():
    facts = hv(cpus=2, memory_mb=4096, alloc_mem=1000, claimed_memory_mb=96, alloc_cpu=3, disk=10 * GIB)["hypervisor"]
    assert s.weigh(facts, s.full_weights()) == 3000
    assert s.weigh(facts, s.full_weights({"ram": 0, "cpu": 1.0, "disk": 0.5})) == 5 + 5


# ------------------------------------------------------------------------------------------------
# place_many


def test_two_vms_that_fit_one_host_each_but_not_both_go_to_different_hosts():
    # 3584 MiB allocatable on each; a is lighter, so the first goes there, and the second no longer fits it.
    hosts = {"src": hv(alloc_mem=3584), "a": hv(alloc_mem=1000), "b": hv(alloc_mem=1500)}
    plan = s.place_many(hosts, [item("vm1", memory_mb=2048), item("vm2", memory_mb=2048)])
    assert hosts_of(plan) == ["a", "b"]
    assert plan[0]["need"] == {"vcpus": 1, "memory_mb": 2048, "disk_bytes": GIB}
    # A third one fits nowhere: it says why, for every host, with the first two counted.
    plan = s.place_many(hosts, [item("vm1", memory_mb=2048), item("vm2", memory_mb=2048),
                                item("vm3", memory_mb=2048)])
    assert hosts_of(plan) == ["a", "b", None]
    assert plan[2]["reasons"]["src"] == ["is the source host"]
    assert plan[2]["reasons"]["a"] == ["RAM: needs 2048 MiB, 536 MiB free (4096 MiB x ratio 1, 512 MiB reserved)"]
    assert plan[2]["error"].startswith("no valid host for vm3 (1 vCPU, 2048 MiB): a: RAM: needs 2048 MiB, 536 MiB")


def test_the_plan_never_overbooks_vcpus_memory_or_disk():
    rnd = random.Random(7)
    hosts = {"hv%d" % i: hv(cpus=rnd.choice((2, 4)), memory_mb=rnd.choice((4096, 8192)), disk=rnd.randint(1, 20) * GIB,
                            alloc_cpu=rnd.randint(0, 4), claimed_vcpus=rnd.randint(0, 2)) for i in range(8)}
    items = [item("vm%d" % i, source="elsewhere", vcpus=rnd.randint(1, 4), memory_mb=rnd.choice((512, 1024, 2048)),
                  disk=rnd.randint(0, 4) * GIB) for i in range(60)]
    plan = s.place_many(hosts, items)
    assert any(p["host"] for p in plan) and any(p["host"] is None for p in plan)
    for name, res in hosts.items():
        h = res["hypervisor"]
        mine = [p["need"] for p in plan if p["host"] == name]
        assert h["allocated_vcpus"] + h["claimed_vcpus"] + sum(n["vcpus"] for n in mine) <= h["cpus"] * 4
        assert sum(n["memory_mb"] for n in mine) <= h["memory_mb"] - 512
        assert sum(n["disk_bytes"] for n in mine) <= h["free_disk_bytes"]


def test_in_place_takes_only_the_increase_and_counts_it():
    # src: 3584 allocatable, 3000 used, of which the VMs' own 512 each: growing 512 -> 1024 needs 512 more.
    hosts = {"src": hv(alloc_mem=3000)}
    plan = s.place_many(hosts, [item("vm1", allow_same_host=True), item("vm2", allow_same_host=True)])
    assert hosts_of(plan) == ["src", None]
    assert plan[0]["need"] == {"vcpus": 0, "memory_mb": 512, "disk_bytes": GIB}
    assert plan[1]["reasons"] == {"src": ["RAM: needs 512 MiB, 72 MiB free (4096 MiB x ratio 1, 512 MiB reserved)"]}
    assert plan[1]["need"]["memory_mb"] == 1024, "not placed: the full request"


def test_excluded_hosts_are_not_destinations_and_say_so():
    hosts = {"src": hv(), "a": hv(), "b": hv(alloc_mem=2000)}
    plan = s.place_many(hosts, [item("vm1", exclude=["a"]), item("vm2", exclude=["a", "b"])])
    assert hosts_of(plan) == ["b", None]
    assert plan[1]["reasons"]["a"] == [s.DRAINED] and plan[1]["reasons"]["b"] == [s.DRAINED]
    # Drained and allowed in place: not even its own host.
    assert s.place_many(hosts, [item("vm1", exclude=["src", "a", "b"], allow_same_host=True)])[0]["reasons"] == {
        "src": [s.DRAINED], "a": [s.DRAINED], "b": [s.DRAINED]}


def test_target_host_is_used_or_the_error_names_it():
    hosts = {"src": hv(), "a": hv(), "b": hv(alloc_mem=2000), "down": {"failed": True, "msg": "timed out"}}
    plan = s.place_many(hosts, [item("vm1", target_host="b"), item("vm2", target_host="b"),
                                item("vm3", target_host="nowhere"), item("vm4", target_host="down"),
                                item("vm5", target_host="src"), item("vm6")])
    assert hosts_of(plan) == ["b", None, None, None, None, "a"]
    assert plan[1]["error"] == ("target host b cannot take vm2: RAM: needs 1024 MiB, 560 MiB free "
                                "(4096 MiB x ratio 1, 512 MiB reserved)")
    assert plan[1]["reasons"] == {"b": [plan[1]["error"].split(": ", 1)[1]]}
    assert plan[2]["error"] == "target host nowhere is not among the hypervisors (4 known)" and plan[2]["reasons"] == {}
    assert plan[3]["error"] == "target host down cannot take vm4: facts unavailable: timed out"
    assert plan[4]["error"] == "target host src cannot take vm5: is the source host"


def test_a_target_placement_lowers_that_hosts_weight_for_the_next_items():
    hosts = {"src": hv(alloc_mem=3584), "a": hv(alloc_mem=0), "b": hv(alloc_mem=500)}
    plan = s.place_many(hosts, [item("vm1", target_host="a", memory_mb=1024), item("vm2", memory_mb=512)])
    assert hosts_of(plan) == ["a", "b"], "a: 4096 - 1024 < b: 4096 - 500"


def test_an_unplaceable_item_keeps_the_others():
    hosts = {"src": hv(), "a": hv(), "b": hv(), "gone": {"unreachable": True, "msg": "no route"}}
    opts = {"b": {"maintenance": True}}
    plan = s.place_many(hosts, [item("vm1"), item("huge", memory_mb=10 ** 6), item("vm2"),
                                item("refused", vm_reasons=lambda h, f: s.Refusals(["has snapshots"]) if h != "src" else []),
                                item("vm3")], host_options=opts)
    assert hosts_of(plan) == ["a", None, "a", None, "a"]
    assert plan[1]["reasons"] == {"a": [plan[1]["reasons"]["a"][0]], "b": [s.IN_MAINTENANCE],
                                  "gone": ["facts unavailable: no route"], "src": ["is the source host"]}
    assert plan[1]["reasons"]["a"][0].startswith("RAM: needs 1000000 MiB")
    assert plan[3]["reasons"]["a"] == ["has snapshots"]
    assert [p.get("error") is None for p in plan] == [True, False, True, False, True]


def test_no_hosts_at_all():
    assert s.place_many({}, [item("vm1")])[0]["error"] == "no valid host for vm1 (1 vCPU, 1024 MiB): no hypervisors"
    with pytest.raises(ResizeError, match="facts of host a are not a mapping"):
        s.place_many({"a": "nonsense"}, [])


def test_the_error_names_the_first_hosts_and_counts_the_rest():
    hosts = {"hv%02d" % i: hv(alloc_mem=3584) for i in range(15)}
    plan = s.place_many(hosts, [item("vm1")])
    assert len(plan[0]["reasons"]) == 15
    assert plan[0]["error"].count("RAM: needs") == s.ERROR_HOSTS
    assert plan[0]["error"].endswith("; and 5 more host(s), see reasons")


# ------------------------------------------------------------------------------------------------
# the heap gives what ranking every host for every item gives


def naive(hosts, items, host_options=None, weights=None):
    """For each item: every host's reasons with the claims so far, rank those that pass, take the first."""
    hosts, host_options, weights = copy.deepcopy(hosts), host_options or {}, s.full_weights(weights)
    out = []
    for it in items:
        request = dict(it["request"])
        rejected = {}
        for name in sorted(hosts):
            reasons = s.host_reasons(name, hosts[name], host_options.get(name) or {}, source=it.get("source"),
                                     need=request, current=it.get("current"),
                                     allow_same_host=bool(it.get("allow_same_host")),
                                     exclude=set(it.get("exclude") or ()), vm_reasons=it.get("vm_reasons"))
            if reasons:
                rejected[name] = reasons
        passed = [h for h in sorted(hosts) if h not in rejected]
        target = it.get("target_host")
        if target:
            passed = [h for h in passed if h == target]
        ranked = sorted(passed, key=lambda h: (-s.weigh(hosts[h]["hypervisor"], weights), h))
        if not ranked:
            if target:
                out.append((it["key"], None, request, {target: rejected[target]} if target in hosts else {}))
            else:
                out.append((it["key"], None, request, rejected))
            continue
        host = ranked[0]
        need = s.need_on(host, it.get("source"), request, it.get("current"))
        facts = hosts[host]["hypervisor"]
        for key, claim in s.CLAIM_KEYS:
            facts[claim] = facts.get(claim, 0) + need[key]
        out.append((it["key"], host, need, None))
    return out


def fleet(rnd, n):
    hosts, options = {}, {}
    for i in range(n):
        name = "hv%03d" % i
        if rnd.random() < 0.05:
            hosts[name] = {"failed": True, "msg": "unreachable"}
            continue
        # Few distinct values: equal weights happen, and the name must break the tie.
        cpus = rnd.choice((2, 4, 8, 32))
        facts = {"cpus": cpus, "memory_mb": rnd.choice((8192, 16384, 65536)), "allocated_vcpus": rnd.randint(0, cpus * 3),
                 "allocated_memory_mb": rnd.choice((0, 2048, 4096)),
                 "free_disk_bytes": rnd.choice((2, 50, 500, 5000)) * GIB,
                 "bridges": ["br-vm"] if rnd.random() < 0.9 else [], "arch": "x86_64"}
        if rnd.random() < 0.2:
            facts.update(claimed_vcpus=2, claimed_memory_mb=1024, claimed_disk_bytes=GIB)
        hosts[name] = {"changed": False, "hypervisor": facts}
        roll = rnd.random()
        if roll < 0.05:
            options[name] = {"maintenance": True}
        elif roll < 0.08:
            options[name] = {"enabled": False}
        elif roll < 0.2:
            options[name] = {"cpu_allocation_ratio": rnd.choice((1.0, 8.0)), "reserved_host_memory_mb": 2048}
    return hosts, options


def vm_check(needs_bridge, refused):
    def reasons(host, facts):
        if refused and host != refused:
            return s.Refusals(["it has snapshots"])
        return [] if not needs_bridge or "br-vm" in facts.get("bridges", []) else ["bridge br-vm missing"]
    return reasons


@pytest.mark.parametrize("seed", range(16))
def test_place_many_equals_ranking_every_host_for_every_item(seed):
    rnd = random.Random(seed)
    hosts, options = fleet(rnd, rnd.choice((5, 40, 120)))
    names = sorted(hosts)
    items = []
    for i in range(rnd.choice((20, 150, 400))):
        source = rnd.choice(names + ["not-a-host"])
        # Small and large needs mixed: a host short of one figure for one VM may take a smaller one later.
        it = item("vm%03d" % i, source=source, vcpus=rnd.choice((1, 2, 4, 16)),
                  memory_mb=rnd.choice((512, 1024, 4096, 16384)), disk=rnd.choice((0, 1, 10, 100, 1000)) * GIB,
                  allow_same_host=rnd.random() < 0.3,
                  exclude=rnd.sample(names, rnd.randint(0, 3)) if rnd.random() < 0.3 else [],
                  vm_reasons=vm_check(rnd.random() < 0.8, source if rnd.random() < 0.05 else None))
        it["current"] = {"vcpus": rnd.choice((1, 2, 4, 16)), "memory_mb": rnd.choice((512, 1024, 4096, 16384))}
        if rnd.random() < 0.1:
            it["target_host"] = rnd.choice(names + [source, "nowhere"])
        items.append(it)
    weights = rnd.choice((None, {"cpu": 100.0}, {"ram": 0.0, "disk": 1.0}, {"ram": 0.0}))
    before = copy.deepcopy((hosts, options))
    got = s.place_many(hosts, items, host_options=options, weights=weights)
    want = naive(hosts, items, host_options=options, weights=weights)
    assert [(p["key"], p["host"], p["need"], p.get("reasons")) for p in got] == want
    assert any(p["host"] for p in got)
    assert (hosts, options) == before, "the inputs are not changed"


def test_inputs_are_not_changed():
    hosts = {"src": hv(), "a": hv(claimed_vcpus=1), "b": {"failed": True, "msg": "x"}}
    items = [item("vm1", exclude=["src"]), item("vm2", target_host="a"), item("vm3", allow_same_host=True)]
    opts = {"a": {"cpu_allocation_ratio": 2.0}}
    before = copy.deepcopy((hosts, items, opts))
    plan = s.place_many(hosts, items, host_options=opts, weights={"cpu": 1.0})
    assert hosts_of(plan) == ["a", "a", "src"]
    assert (hosts, items, opts) == before
    assert "claimed_memory_mb" not in hosts["a"]["hypervisor"] and hosts["a"]["hypervisor"]["claimed_vcpus"] == 1


def test_a_host_that_fell_short_is_passed_over_for_as_much_but_asked_again_for_less():
    # big: most free RAM, 10 GiB of disk; small: less RAM, plenty of disk.
    hosts = {"src": hv(), "big": hv(memory_mb=8192, disk=10 * GIB), "small": hv()}
    plan = s.place_many(hosts, [item("vm1", disk=20 * GIB), item("vm2", disk=30 * GIB), item("vm3", disk=5 * GIB),
                                item("vm4", disk=200 * GIB)])
    assert hosts_of(plan) == ["small", "small", "big", None]
    assert plan[3]["reasons"]["big"] == ["disk: needs 200 GiB, 5 GiB free"], "worked out when it is placed nowhere"
    assert plan[3]["reasons"]["small"] == ["disk: needs 200 GiB, 50 GiB free"]


def test_a_host_short_of_vcpus_for_one_vm_takes_a_smaller_one_with_as_much_disk():
    hosts = {"src": hv(), "roomy": hv(cpus=2, memory_mb=65536), "other": hv(cpus=32)}
    plan = s.place_many(hosts, [item("vm1", vcpus=16, disk=10 * GIB), item("vm2", vcpus=1, disk=10 * GIB),
                                item("vm3", vcpus=9, disk=10 * GIB)])
    assert hosts_of(plan) == ["other", "roomy", "other"]
