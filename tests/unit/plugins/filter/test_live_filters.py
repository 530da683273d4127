"""The live path as the controller decides it (filters resize_path, resize_due)."""

from ansible_collections.hypervisor.resize.plugins.filter.resize import FilterModule
from ansible_collections.hypervisor.resize.plugins.module_utils.flavor import GIB, resize_plan
from ansible_collections.hypervisor.resize.tests.unit.plugins.module_utils.test_live import flavor, instance

F = FilterModule().filters()


def test_the_filter_asks_the_scheduler_about_the_vms_own_host():
    hv = {"cpus": 2, "memory_mb": 1024, "allocated_vcpus": 1, "allocated_memory_mb": 128, "free_disk_bytes": 100 * GIB,
          "bridges": ["vmbr0"], "networks": [], "arch": "x86_64"}
    inst = dict(instance(), interfaces=[{"type": "bridge", "source": {"bridge": "vmbr0"}}], copy_disks=[])
    results = {"hv1": {"hypervisor": hv, "instance": inst}, "hv2": {"hypervisor": dict(hv), "instance": None}}
    plan = resize_plan(inst, flavor())
    assert F["resize_path"](results, "hv1", inst, plan, flavor())["path"] == "live"
    # 1024 MiB - 512 reserved - 128 used leaves 384: the VM's own host cannot take 128 more with 300 used elsewhere.
    results["hv1"]["hypervisor"] = dict(hv, allocated_memory_mb=500)
    got = F["resize_path"](results, "hv1", inst, plan, flavor())
    assert got["path"] == "cold" and "cannot take the increase" in got["why"][0] and "RAM" in got["why"][0]


def test_the_vms_host_is_asked_only_for_what_grows_in_place():
    big = [{"device": "disk", "path": "/i/web01.qcow2", "allocation": 100 * GIB, "readonly": False, "network": None}]
    hv = {"cpus": 2, "memory_mb": 4096, "allocated_vcpus": 1, "allocated_memory_mb": 128, "free_disk_bytes": 20 * GIB,
          "bridges": ["vmbr0"], "networks": [], "arch": "x86_64"}
    inst = dict(instance(), interfaces=[], copy_disks=big, moved_files=big)
    results = {"hv1": {"hypervisor": hv, "instance": inst}}
    plan = resize_plan(inst, flavor())
    assert F["resize_path"](results, "hv1", inst, plan, flavor())["path"] == "live", "1 GiB grows, 100 GiB never moves"
    got = F["resize_path"](results, "hv1", inst, plan, flavor(), host_options={"hv1": {"maintenance": True}})
    assert got["path"] == "cold" and "in maintenance" in got["why"][0]


def test_an_in_place_resize_is_due_on_its_own_record():
    rec = {"id": "m-1", "status": "finished", "source": "hv1", "dest": "hv1", "updated": "2026-12-01T10:00:00Z"}
    results = {"hv1": {"hypervisor": {"domains": [{"name": "web01", "migration": rec}]}}}
    due = F["resize_due"](results, 3600, "2026-12-01T12:00:00Z")
    assert [(d["instance"], d["source"], d["dest"], d["age_seconds"]) for d in due] == [("web01", "hv1", "hv1", 7200)]
