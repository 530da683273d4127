"""resize_batch_plan / resize_batch_facts: a batch placed at once (pure, no libvirt)."""
import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.hypervisor.resize.plugins.filter.resize import FilterModule, _facts, _move_review, _vm_reasons
from ansible_collections.hypervisor.resize.plugins.module_utils import schedule as s
from ansible_collections.hypervisor.resize.tests.unit.plugins.filter.test_resize_filters import (
    FLAVOR,
    INSTANCE,
    results,
)
from ansible_collections.hypervisor.resize.tests.unit.plugins.filter.test_resize_filters import hv as fhv

F = FilterModule().filters()
GIB = 1024 ** 3
FLAVORS = {"m1.tiny": {"vcpus": 1, "memory_mb": 128, "root_gb": 1},
           "m1.big": {"vcpus": 2, "memory_mb": 1024, "root_gb": 1}}


def vm(name, state="shutoff", root=GIB, vcpus=1, memory_mb=128):
    uuid = "00000000-0000-0000-0000-%012d" % (sum(map(ord, name)))
    xml = ("<domain type='qemu'><name>%s</name><uuid>%s</uuid><memory unit='MiB'>%d</memory><vcpu>%d</vcpu>"
           "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices>"
           "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
           "<source file='/var/lib/libvirt/images/%s.qcow2'/><target dev='vda' bus='virtio'/></disk>"
           "<interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='vmbr0'/></interface>"
           "</devices></domain>") % (name, uuid, memory_mb, vcpus, name)
    disk = {"path": "/var/lib/libvirt/images/%s.qcow2" % name, "virtual_size": root, "allocation": GIB // 4}
    return {"name": name, "uuid": uuid, "state": state, "vcpus": vcpus, "memory_mb": memory_mb, "xml": xml,
            "disks": [disk], "migration": None, "busy": None}


def hv(memory_mb=4096, alloc_mem=0, cpus=2, **kw):
    d = {"cpus": cpus, "memory_mb": memory_mb, "allocated_vcpus": 0, "allocated_memory_mb": alloc_mem,
         "free_disk_bytes": 100 * GIB, "bridges": ["vmbr0"], "networks": [], "arch": "x86_64",
         "storage_roots": ["/var/lib/libvirt/images"], "reserved_host_memory_mb": 0}
    d.update(kw)
    return d


def fleet(hosts, vms):
    """hosts: {name: hv()}, vms: {host: [vm()]} -> facts gathered with instances."""
    return {h: {"hypervisor": facts, "instances": {v["name"]: v for v in vms.get(h, [])}} for h, facts in hosts.items()}


def test_each_placement_counts_the_ones_before_it():
    # hv2 and hv3 each have room for one m1.big (1024 MiB) beside the 512 MiB host reserve, not two.
    hosts = {"hv1": hv(), "hv2": hv(memory_mb=1600), "hv3": hv(memory_mb=1600)}
    res = fleet(hosts, {"hv1": [vm("a"), vm("b")]})
    opts = {h: {"reserved_host_memory_mb": 512} for h in hosts}
    plan = F["resize_batch_plan"](res, [{"instance": "a", "flavor": "m1.big"}, {"instance": "b", "flavor": "m1.big"}],
                                  FLAVORS, host_options=opts)
    assert [(v["instance"], v["source"], v["dest"]) for v in plan["vms"]] == [("a", "hv1", "hv2"), ("b", "hv1", "hv3")]
    assert plan["refused"] == []


def test_a_vm_with_no_room_left_is_refused_alone_and_the_others_go():
    hosts = {"hv1": hv(), "hv2": hv(memory_mb=1600)}
    res = fleet(hosts, {"hv1": [vm("a"), vm("b")]})
    opts = {h: {"reserved_host_memory_mb": 512} for h in hosts}
    plan = F["resize_batch_plan"](res, [{"instance": "a", "flavor": "m1.big"}, {"instance": "b", "flavor": "m1.big"}],
                                  FLAVORS, host_options=opts)
    assert [v["instance"] for v in plan["vms"]] == ["a"]
    assert [r["instance"] for r in plan["refused"]] == ["b"]
    assert "hv2" in plan["refused"][0]["reason"] and "RAM: needs 1024 MiB, 64 MiB free" in plan["refused"][0]["reason"]


def test_migrate_moves_at_the_current_size_and_never_stays():
    res = fleet({"hv1": hv(), "hv2": hv()}, {"hv1": [vm("a", state="running")]})
    plan = F["resize_batch_plan"](res, [{"instance": "a", "operation": "migrate"}], FLAVORS)
    (only,) = plan["vms"]
    assert (only["source"], only["dest"], only["path"], only["operation"]) == ("hv1", "hv2", "cold", "migrate")
    assert only["after"]["vcpus"] == 1 and only["after"]["memory_mb"] == 128 and only["after"]["root_bytes"] == GIB


def test_drained_host_is_no_destination():
    res = fleet({"hv1": hv(), "hv2": hv(), "hv3": hv(memory_mb=8192)}, {"hv2": [vm("a")], "hv1": [vm("b")]})
    plan = F["resize_batch_plan"](res, [{"instance": "a", "operation": "migrate"},
                                        {"instance": "b", "operation": "migrate"}], FLAVORS, exclude=["hv3"])
    assert {v["instance"]: v["dest"] for v in plan["vms"]} == {"a": "hv1", "b": "hv2"}
    plan = F["resize_batch_plan"](res, [{"instance": "a", "operation": "migrate"}], FLAVORS, exclude=["hv1", "hv3"])
    assert plan["vms"] == [] and "drained" in plan["refused"][0]["reason"]


def test_same_size_resize_is_unchanged_and_unknown_vm_refused_alone():
    res = fleet({"hv1": hv(), "hv2": hv()}, {"hv1": [vm("a"), vm("b")]})
    plan = F["resize_batch_plan"](res, [{"instance": "a", "flavor": "m1.tiny"}, {"instance": "ghost", "flavor": "m1.big"},
                                        {"instance": "b", "flavor": "m1.big"}], FLAVORS)
    assert plan["unchanged"] == ["a"]
    assert [r["instance"] for r in plan["refused"]] == ["ghost"] and "not defined" in plan["refused"][0]["reason"]
    assert [v["instance"] for v in plan["vms"]] == ["b"]


def test_migrate_of_a_disk_that_is_not_whole_gib_names_it():
    res = fleet({"hv1": hv(), "hv2": hv()}, {"hv1": [vm("a", root=GIB + 512)]})
    plan = F["resize_batch_plan"](res, [{"instance": "a", "operation": "migrate"}], FLAVORS)
    assert plan["vms"] == [] and "root disk" in plan["refused"][0]["reason"]
    assert "flavor" in plan["refused"][0]["reason"]


@pytest.mark.parametrize("requests, message", [
    ([], "non-empty list"),
    ("web01", "non-empty list"),
    ([{"instance": "a", "flavor": "m1.big", "colour": "red"}], "unknown key(s) colour"),
    ([{"instance": "a", "flavor": "m1.big"}, {"instance": "a", "flavor": "m1.tiny"}], "asked for twice"),
    ([{"instance": "a"}], "has no flavor"),
    ([{"instance": "a", "operation": "delete"}], "resize or migrate"),
    ([{"instance": "../etc", "flavor": "m1.big"}], "name"),
])
def test_malformed_batches_are_refused_whole(requests, message):
    res = fleet({"hv1": hv()}, {"hv1": [vm("a")]})
    with pytest.raises(AnsibleFilterError, match="(?i)" + message.replace("(", r"\(").replace(")", r"\)")):
        F["resize_batch_plan"](res, requests, FLAVORS)


def test_batch_facts_give_one_vms_view():
    res = fleet({"hv1": hv(), "hv2": hv()}, {"hv1": [vm("a")]})
    view = F["resize_batch_facts"](res, "a")
    assert view["hv1"]["instance"]["name"] == "a" and view["hv2"]["instance"] is None
    assert "instances" not in view["hv1"] and view["hv2"]["hypervisor"]["cpus"] == 2


def test_one_item_goes_where_resize_schedule_sends_it():
    res = results(hv1=fhv(), hv2=fhv(alloc_mem=1000), hv3=fhv(alloc_mem=100), hv4=fhv(bridges=()),
                  hv5=fhv(alloc_cpu=8), hv6=fhv(arch="aarch64"), hv7=fhv())
    opts = {"hv7": {"maintenance": True}}
    one = F["resize_schedule"](res, "hv1", INSTANCE, FLAVOR, host_options=opts)
    refusals, paths = _move_review(INSTANCE, [])
    plan = s.place_many(res, [{"key": "web01", "source": "hv1", "request": one["request"],
                               "current": {"vcpus": 1, "memory_mb": 128},
                               "vm_reasons": _vm_reasons(INSTANCE, _facts(res), "hv1", paths, refusals)},
                              {"key": "web01-again", "source": "hv1", "request": one["request"],
                               "vm_reasons": _vm_reasons(INSTANCE, _facts(res), "hv1", paths, refusals)}],
                        host_options=opts)
    assert plan[0]["host"] == one["host"] == "hv3"
    assert plan[1]["host"] == "hv2", "hv3: 4096 - 100 - 1024 < hv2: 4096 - 1000"


def test_a_host_answering_for_a_vm_with_another_domain_is_refused():
    # Attack (rule C2): hv1 is asked about "a" and answers with its domain "b" (alone or in a batch).
    res = fleet({"hv1": hv(), "hv2": hv()}, {})
    res["hv1"]["instances"] = {"a": vm("b")}
    plan = F["resize_batch_plan"](res, [{"instance": "a", "operation": "migrate"}], FLAVORS)
    assert plan["vms"] == [] and "hv1 answered for VM a with a domain named 'b'" in plan["refused"][0]["reason"]
    single = {"hv1": {"hypervisor": hv(), "instance": vm("b")}, "hv2": {"hypervisor": hv(), "instance": None}}
    with pytest.raises(AnsibleFilterError, match="answered for VM a with a domain named 'b'"):
        F["resize_locate"](single, "a")
