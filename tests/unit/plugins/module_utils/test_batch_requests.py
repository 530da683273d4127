"""A batch's requests (list, pattern, drain and its way back), its waves and its table."""

import pytest

from ansible_collections.hypervisor.resize.plugins.module_utils import batch as b
from ansible_collections.hypervisor.resize.plugins.module_utils import schedule
from ansible_collections.hypervisor.resize.plugins.module_utils.errors import ResizeError

DRAIN = "0b6f5a1e-8d2b-4b7e-9a51-0c2d3e4f5a6b"
OTHER = "1c7a6b2f-9e3c-4c8f-8b62-1d3e4f5a6b7c"


def host(instances=None, maintenance=None, **hv):
    return {"changed": False, "hypervisor": dict(hv, maintenance=maintenance),
            "instances": {n: dict({"name": n}, **(v or {})) for n, v in (instances or {}).items()}}


def rec(source="hv1", dest="hv2", instance=None, batch=DRAIN, status="confirmed"):
    return {"migration": {"id": OTHER, "source": source, "dest": dest, "instance": instance, "batch": batch,
                          "status": status}}


def test_a_list_is_taken_as_given_and_a_pattern_adds_every_matching_vm_once():
    results = {"hv1": host({"web01": None, "db01": None}), "hv2": host({"web02": None})}
    reqs, notes = b.requests_for(results, [{"instance": "db01", "operation": "migrate"}], match="^web",
                                 flavor="m1.small")
    assert reqs == [{"instance": "db01", "operation": "migrate"},
                    {"instance": "web01", "flavor": "m1.small", "operation": "resize"},
                    {"instance": "web02", "flavor": "m1.small", "operation": "resize"}]
    assert notes == []


@pytest.mark.parametrize("pattern, error", [("^zz", "no VM on the hypervisors has a name matching"),
                                            ("(", "is not a regular expression")])
def test_a_pattern_that_selects_nothing_or_is_not_one_is_refused(pattern, error):
    with pytest.raises(ResizeError, match=error):
        b.requests_for({"hv1": host({"web01": None})}, match=pattern, flavor="m1.small")


def test_a_drain_migrates_every_vm_of_the_host_and_no_other():
    results = {"hv1": host({"a": None, "b": None}), "hv2": host({"c": None})}
    reqs = b.requests_for(results, drain_host="hv1")[0]
    assert reqs == [{"instance": "a", "operation": "migrate"}, {"instance": "b", "operation": "migrate"}]


def test_a_drain_of_a_host_outside_the_play_or_without_facts_is_refused():
    with pytest.raises(ResizeError, match="not one of the hypervisors"):
        b.requests_for({"hv1": host()}, drain_host="hv9")
    with pytest.raises(ResizeError, match="cannot read hv1's facts: boom"):
        b.requests_for({"hv1": {"failed": True, "msg": "boom"}}, drain_host="hv1")


def test_the_way_back_takes_the_confirmed_moves_of_that_drain_back_to_the_host():
    results = {
        "hv1": host(maintenance={"since": "x", "reason": "drain", "drain_id": DRAIN}),
        "hv2": host({"a": rec(instance="a"), "b": rec(instance="b", status="finished"),
                     "c": rec(instance="c", batch=OTHER), "d": None}),
        "hv3": host({"e": rec(instance="e", dest="hv3")}),
    }
    reqs, notes = b.requests_for(results, drain_host="hv1", undo=True)
    assert reqs == [{"instance": "a", "operation": "migrate", "target_host": "hv1"},
                    {"instance": "e", "operation": "migrate", "target_host": "hv1"}]
    assert len(notes) == 1 and notes[0].startswith("b on hv2: its move is finished, not confirmed")


def test_the_way_back_needs_a_drain_marker():
    with pytest.raises(ResizeError, match="not in maintenance from a drain"):
        b.requests_for({"hv1": host(), "hv2": host({"a": rec(instance="a")})}, drain_host="hv1", undo=True)


def test_attack_a_drained_host_cannot_pull_a_vm_that_never_left_it():
    """Rule C3: hv1 (compromised) names a drain id; only what the VMs' own hosts recorded counts.
    db01 came from hv3 in that batch (hv1 may have copied the id from anywhere), web01's record was
    planted under another name, and x01 is reported by two hosts: none of them moves."""
    results = {
        "hv1": host(maintenance={"since": "x", "reason": "drain", "drain_id": DRAIN}),
        "hv2": host({"db01": rec(source="hv3", instance="db01"),
                     "web01": rec(instance="web99"),
                     "x01": rec(instance="x01"),
                     "y01": rec(instance="y01", dest="hv3")}),
        "hv3": host({"x01": rec(instance="x01", dest="hv3")}),
    }
    with pytest.raises(ResizeError, match="no VM to bring back to hv1") as err:
        b.requests_for(results, drain_host="hv1", undo=True)
    for note in ("db01 on hv2: its record does not say it came from hv1 to hv2",
                 "web01 on hv2: its record does not say", "x01: reported by hv2, hv3", "y01 on hv2"):
        assert note in str(err.value)


def vm(name, dest, source="hv1"):
    return {"instance": name, "dest": dest, "source": source}


def test_waves_keep_both_limits_and_the_plan_order():
    vms = [vm("a", "hv2"), vm("b", "hv2"), vm("c", "hv2"), vm("d", "hv3"), vm("e", "hv3"), vm("f", "hv2")]
    got = b.waves(vms, parallel=3, per_host=2)
    assert got["waves"] == [["a", "b", "d"], ["c", "e", "f"]]
    assert got["sizes"] == [3, 3] and got["order"] == ["a", "b", "d", "c", "e", "f"]
    for wave in got["waves"]:
        dests = [next(v["dest"] for v in vms if v["instance"] == n) for n in wave]
        assert len(wave) <= 3 and max(dests.count(d) for d in dests) <= 2
    assert b.waves(vms, parallel=1, per_host=1)["sizes"] == [1] * 6
    assert b.waves([], 4, 2) == {"order": [], "sizes": [], "waves": []}


def test_waves_refuse_a_limit_below_one():
    with pytest.raises(ResizeError, match="at least 1"):
        b.waves([vm("a", "hv2")], parallel=0)


def test_the_table_has_a_row_per_vm_with_its_sizes_downtime_and_result():
    size = {"vcpus": 1, "memory_mb": 128, "root_bytes": 1024 ** 3}
    lines = b.table([{"instance": "a", "source": "hv1", "dest": "hv2", "before": size,
                      "after": dict(size, vcpus=2), "downtime": 7.25, "result": "confirmed"},
                     {"instance": "b", "source": "hv1", "dest": "hv3", "before": size, "after": size,
                      "downtime": None, "result": "failed: boom"}],
                    refused=[{"instance": "c", "reason": "no valid host"}], unchanged=["d"])
    assert lines[0].split() == ["VM", "from", "to", "before", "after", "downtime", "result"]
    assert "1 vCPU 128 MiB 1 GiB" in lines[1] and "2 vCPU 128 MiB 1 GiB" in lines[1] and "7.2s" in lines[1]
    assert lines[2].endswith("failed: boom") and lines[3].endswith("refused (why: below)")
    assert lines[4].endswith("already that size") and len(lines) == 5


def test_a_plan_line_names_the_move_or_the_refusal():
    assert b.line({"instance": "a", "source": "hv1", "dest": "hv2", "operation": "migrate", "flavor": "m1.tiny",
                   "path": "cold", "why": ["x"]}) == "a: hv1 -> hv2, migrate to m1.tiny (cold): x"
    assert b.line({"instance": "a", "source": "hv1", "dest": "hv2", "operation": "migrate", "requested_flavor": "",
                   "path": "cold", "why": ["x"]}) == "a: hv1 -> hv2, migrate at its size (cold): x"
    assert b.line({"instance": "a", "reason": "no"}) == "a: refused: no"


def test_a_host_in_maintenance_by_its_marker_takes_no_vm_unless_its_way_back_runs():
    res = host(maintenance={"since": "t", "reason": "drained by playbooks/drain.yml", "drain_id": DRAIN})
    reasons = schedule.fixed_reasons(res, {})
    assert reasons and reasons[0].startswith("in maintenance since t (drained by playbooks/drain.yml)")
    assert schedule.fixed_reasons(res, {"returning": True}) == []
    res["hypervisor"]["maintenance"]["returning"] = True
    assert schedule.fixed_reasons(res, {}) == []


def test_requests_may_come_as_yaml_or_json_text_and_anything_else_is_refused():
    assert b.parse_requests('[{"instance": "a", "flavor": "m1.small"}]') == [{"instance": "a", "flavor": "m1.small"}]
    assert b.parse_requests("- {instance: a, operation: migrate}\n") == [{"instance": "a", "operation": "migrate"}]
    assert b.parse_requests("") == [] and b.parse_requests(None) == []
    with pytest.raises(ResizeError, match="neither a list nor YAML/JSON text"):
        b.parse_requests('[{"instance":')
    with pytest.raises(ResizeError, match="must be a list"):
        b.parse_requests("web01")


def test_attack_a_malformed_marker_takes_out_only_the_host_that_reports_it():
    """Rule C3: a hostile host's marker that is not a mapping must not stop the placement of others."""
    for marker in ("x", ["a"], 5):
        reasons = schedule.fixed_reasons(host(maintenance=marker), {})
        assert reasons and reasons[0].startswith("in maintenance (its marker is malformed")
    hosts = {"hv1": host(maintenance="x", cpus=4, memory_mb=4096, allocated_vcpus=0, allocated_memory_mb=0,
                         free_disk_bytes=10 ** 12, bridges=[], networks=[], arch="x86_64"),
             "hv2": host(cpus=4, memory_mb=4096, allocated_vcpus=0, allocated_memory_mb=0,
                         free_disk_bytes=10 ** 12, bridges=[], networks=[], arch="x86_64")}
    item = {"key": "a", "source": "hv3", "request": {"vcpus": 1, "memory_mb": 128, "disk_bytes": 0},
            "current": {"vcpus": 1, "memory_mb": 128}}
    got = schedule.place_many(hosts, [item], host_options={})
    assert got[0]["host"] == "hv2"


def test_attack_a_bystander_reporting_garbage_does_not_stop_a_way_back():
    results = {
        "hv1": host(maintenance={"since": "x", "reason": "drain", "drain_id": DRAIN}),
        "hv2": host({"a": rec(instance="a")}),
        "hv3": {"changed": False, "hypervisor": {}, "instances": {"b": "garbage", "c": {"migration": "x"}}},
    }
    reqs, _notes = b.requests_for(results, drain_host="hv1", undo=True)
    assert reqs == [{"instance": "a", "operation": "migrate", "target_host": "hv1"}]


def test_a_marker_whose_drain_id_is_not_an_id_has_no_way_back():
    for bad in ("../x", 5, None, "not-a-uuid"):
        with pytest.raises(ResizeError, match="not in maintenance from a drain"):
            b.requests_for({"hv1": host(maintenance={"drain_id": bad}), "hv2": host({"a": rec(instance="a")})},
                           drain_host="hv1", undo=True)


def test_a_name_that_is_not_a_plain_domain_name_is_left_out_with_a_note_not_the_whole_batch():
    results = {"hv1": host({"web01": None, "web{x}": None, "web 2": None})}
    reqs, notes = b.requests_for(results, match="^web", flavor="m1.small")
    assert [r["instance"] for r in reqs] == ["web01"]
    assert len(notes) == 2 and all("not a plain domain name" in n and "on hv1" in n for n in notes)
    reqs, notes = b.requests_for(results, drain_host="hv1")
    assert [r["instance"] for r in reqs] == ["web01"] and len(notes) == 2


def test_a_drain_of_an_empty_host_asks_for_nothing_and_so_does_its_way_back():
    assert b.requests_for({"hv1": host()}, drain_host="hv1") == ([], [])
    assert b.requests_for({"hv1": host(maintenance={"drain_id": DRAIN}), "hv2": host({"a": None})},
                          drain_host="hv1", undo=True) == ([], [])
    assert b.parse_requests("  \n ") == []


def test_a_vm_without_a_result_is_a_failed_row():
    vms = [vm("a", "hv2"), vm("b", "hv3"), vm("c", "hv3")]
    got = b.rows(vms, [{"instance": "a", "result": "confirmed"}, None])
    assert got[0]["result"] == "confirmed"
    assert [r["result"].startswith("failed: no result") for r in got[1:]] == [True, True]
    assert "recover.yml -e instance=b" in got[1]["result"] and got[1]["dest"] == "hv3"


def test_the_way_back_knows_a_destination_by_its_inventory_name_or_its_hostname():
    results = {"hv1.example": host(maintenance={"drain_id": DRAIN}),
               "hv2.example": host({"a": rec(source="hv1.example", dest="hv2", instance="a")}, hostname="hv2")}
    reqs, _notes = b.requests_for(results, drain_host="hv1.example", undo=True)
    assert reqs == [{"instance": "a", "operation": "migrate", "target_host": "hv1.example"}]
