import pytest

from ansible_collections.hypervisor.resize.plugins.module_utils import flavor as f
from ansible_collections.hypervisor.resize.plugins.module_utils.errors import ValidationError

GIB = 1024 ** 3
FLAVORS = {
    "m1.tiny": {"vcpus": 1, "memory_mb": 128, "root_gb": 1},
    "m1.small": {"vcpus": 2, "memory_mb": 256, "root_gb": 2, "ephemeral_gb": 0, "swap_mb": 0},
    "m1.zero": {"vcpus": 2, "memory_mb": 256, "root_gb": 0},
}


def vm(vcpus=1, memory_mb=128, root=GIB):
    return {"name": "web01", "vcpus": vcpus, "memory_mb": memory_mb, "root_disk": {"virtual_size": root}}


def test_lookup_normalizes_and_fills_optional_keys():
    assert f.lookup_flavor(FLAVORS, "m1.tiny") == {"name": "m1.tiny", "vcpus": 1, "memory_mb": 128, "root_gb": 1,
                                                   "ephemeral_gb": 0, "swap_mb": 0}


def test_unknown_flavor_lists_the_known_ones():
    with pytest.raises(ValidationError, match="unknown flavor 'm1.huge'") as err:
        f.lookup_flavor(FLAVORS, "m1.huge")
    assert "m1.small" in err.value.full_message()


@pytest.mark.parametrize("bad,match", [
    ({"vcpus": 1, "memory_mb": 128}, "lacks root_gb"),
    ({"vcpus": "two", "memory_mb": 128, "root_gb": 1}, "vcpus must be a whole number"),
    ({"vcpus": 1.5, "memory_mb": 128, "root_gb": 1}, "vcpus must be a whole number"),
    ({"vcpus": True, "memory_mb": 128, "root_gb": 1}, "vcpus must be a whole number"),
    ({"vcpus": 0, "memory_mb": 128, "root_gb": 1}, "at least 1"),
    ({"vcpus": 1, "memory_mb": -5, "root_gb": 1}, "must not be negative"),
    ({"vcpus": 1, "memory_mb": 128, "root_gb": 1, "disk": 3}, "unknown key"),
    ("big", "must be a mapping"),
])
def test_bad_flavors_are_refused_with_the_reason(bad, match):
    with pytest.raises(ValidationError, match=match):
        f.normalize_flavor(bad, "x")


def test_plan_grow():
    plan = f.resize_plan(vm(), f.lookup_flavor(FLAVORS, "m1.small"))
    assert plan["changed"]
    assert plan["changes"] == {"vcpus": [1, 2], "memory_mb": [128, 256], "root_bytes": [GIB, 2 * GIB]}


def test_plan_same_size_is_no_change():
    plan = f.resize_plan(vm(), f.lookup_flavor(FLAVORS, "m1.tiny"))
    assert not plan["changed"] and plan["changes"] == {}


def test_plan_refuses_root_shrink_up_front():
    with pytest.raises(ValidationError, match="shrink the root disk from 2 GiB to 1 GiB"):
        f.resize_plan(vm(root=2 * GIB), f.lookup_flavor(FLAVORS, "m1.tiny"))


def test_plan_refuses_root_gb_zero():
    with pytest.raises(ValidationError, match="root_gb=0"):
        f.resize_plan(vm(), f.lookup_flavor(FLAVORS, "m1.zero"))


@pytest.mark.parametrize("state", ["paused", "crashed", "pmsuspended", "shutdown"])
def test_plan_refuses_a_vm_that_is_not_running_or_off(state):
    with pytest.raises(ValidationError, match="the VM is %s; only a running or shut-off VM" % state):
        f.resize_plan(dict(vm(), state=state), f.lookup_flavor(FLAVORS, "m1.small"))


def test_plan_same_size_of_a_paused_vm_is_still_no_change():
    assert not f.resize_plan(dict(vm(), state="paused"), f.lookup_flavor(FLAVORS, "m1.tiny"))["changed"]


def vm_with(eph=None, swap=None):
    d = vm()
    d["ephemeral_disk"] = {"virtual_size": eph} if eph is not None else None
    d["swap_disk"] = {"virtual_size": swap} if swap is not None else None
    return d


def flavor(**kw):
    return f.normalize_flavor(dict({"vcpus": 1, "memory_mb": 128, "root_gb": 1}, **kw), "x")


def test_plan_grows_ephemeral_and_resizes_swap():
    plan = f.resize_plan(vm_with(eph=GIB, swap=64 * 1024 * 1024), flavor(ephemeral_gb=2, swap_mb=128))
    assert plan["changes"] == {"ephemeral_bytes": [GIB, 2 * GIB], "swap_bytes": [64 * 1024 * 1024, 128 * 1024 * 1024]}
    assert plan["after"]["ephemeral_bytes"] == 2 * GIB and plan["warnings"] == []


def test_plan_refuses_ephemeral_shrink_up_front():
    with pytest.raises(ValidationError, match="would shrink the ephemeral disk from 2 GiB to 1 GiB"):
        f.resize_plan(vm_with(eph=2 * GIB), flavor(ephemeral_gb=1))
    with pytest.raises(ValidationError, match="would shrink the ephemeral disk from 1 GiB to 0 GiB"):
        f.resize_plan(vm_with(eph=GIB), flavor(ephemeral_gb=0))


def test_plan_warns_about_disks_the_vm_does_not_have():
    plan = f.resize_plan(vm_with(), flavor(vcpus=2, ephemeral_gb=1, swap_mb=64))
    assert len(plan["warnings"]) == 2 and "no ephemeral disk" in plan["warnings"][0]
    assert set(plan["changes"]) == {"vcpus"}


def test_disk_roles_by_file_name():
    from ansible_collections.hypervisor.resize.plugins.module_utils.domain import disk_role
    assert disk_role("/i/web01-ephemeral.qcow2") == "ephemeral" and disk_role("/i/web01-swap.raw") == "swap"
    assert disk_role("/i/web01.qcow2") is None and disk_role("/i/swap-web01.qcow2") is None


def test_plan_allows_cpu_and_memory_shrink_with_same_disk():
    plan = f.resize_plan(vm(vcpus=2, memory_mb=256), f.lookup_flavor(FLAVORS, "m1.tiny"))
    assert plan["changes"] == {"vcpus": [2, 1], "memory_mb": [256, 128]}


HOST = {"cpus": 2, "memory_mb": 4096, "allocated_vcpus": 0, "allocated_memory_mb": 0, "free_disk_bytes": 10 * GIB}


@pytest.mark.parametrize("host,request_,fragments", [
    ({}, {"vcpus": 8, "memory_mb": 3584, "disk_bytes": 10 * GIB}, []),
    ({}, {"vcpus": 9, "memory_mb": 128, "disk_bytes": 0}, ["vCPUs: needs 9, 8 of 8 free"]),
    ({"allocated_vcpus": 6, "claimed_vcpus": 1}, {"vcpus": 2, "memory_mb": 128, "disk_bytes": 0}, ["vCPUs: needs 2, 1 of 8"]),
    ({}, {"vcpus": 1, "memory_mb": 3585, "disk_bytes": 0}, ["RAM: needs 3585 MiB, 3584 MiB free"]),
    ({"claimed_memory_mb": 3000}, {"vcpus": 1, "memory_mb": 600, "disk_bytes": 0}, ["RAM: needs 600 MiB, 584 MiB free"]),
    ({"reserved_host_memory_mb": 0}, {"vcpus": 1, "memory_mb": 4096, "disk_bytes": 0}, []),
    ({"cpu_allocation_ratio": 1.0}, {"vcpus": 3, "memory_mb": 128, "disk_bytes": 0}, ["vCPUs: needs 3, 2 of 2"]),
    ({"claimed_disk_bytes": 9 * GIB}, {"vcpus": 1, "memory_mb": 128, "disk_bytes": 2 * GIB}, ["disk: needs 2 GiB, 1 GiB free"]),
])
def test_capacity_reasons(host, request_, fragments):
    reasons = f.capacity_reasons(dict(HOST, **host), request_)
    assert len(reasons) == len(fragments)
    for reason, frag in zip(reasons, fragments):
        assert frag in reason
