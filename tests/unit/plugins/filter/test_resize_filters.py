import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.hypervisor.resize.plugins.filter.resize import FilterModule

F = FilterModule().filters()
GIB = 1024 ** 3


def hv(cpus=2, memory_mb=4096, alloc_cpu=0, alloc_mem=0, disk=100 * GIB, bridges=("vmbr0",), arch="x86_64", **kw):
    d = {"cpus": cpus, "memory_mb": memory_mb, "allocated_vcpus": alloc_cpu, "allocated_memory_mb": alloc_mem,
         "free_disk_bytes": disk, "bridges": list(bridges), "networks": [], "arch": arch}
    d.update(kw)
    return d


DISKS = [{"device": "disk", "path": "/i/web01.qcow2", "allocation": GIB, "readonly": False, "network": None}]
INSTANCE = {"name": "web01", "uuid": "u", "vcpus": 1, "memory_mb": 128, "disks": DISKS, "copy_disks": DISKS,
            "interfaces": [{"type": "bridge", "mac": "52:54:00:00:00:01", "source": {"bridge": "vmbr0"}}],
            "root_disk": {"virtual_size": GIB}}
FLAVOR = {"name": "m1.small", "vcpus": 2, "memory_mb": 1024, "root_gb": 2}


def results(**hosts):
    out = {}
    for name, facts in hosts.items():
        out[name] = {"hypervisor": facts, "instance": INSTANCE if name == "hv1" else None}
    return out


def test_locate_finds_the_single_host():
    assert F["resize_locate"](results(hv1=hv(), hv2=hv()), "web01")["host"] == "hv1"


def test_locate_not_found_names_the_hosts():
    res = results(hv2=hv(), hv3=hv())
    res["hv4"] = {"failed": True, "msg": "unreachable"}
    with pytest.raises(AnsibleFilterError, match=r"not defined on any hypervisor \(hv2, hv3, hv4\); unreachable or failed: hv4"):
        F["resize_locate"](res, "web01")


def test_locate_on_two_hosts_is_refused():
    res = results(hv1=hv(), hv2=hv())
    res["hv2"]["instance"] = INSTANCE
    with pytest.raises(AnsibleFilterError, match="defined on more than one hypervisor: hv1, hv2"):
        F["resize_locate"](res, "web01")


def test_locate_open_migration_is_refused():
    res = results(hv1=hv(), hv2=hv())
    res["hv2"]["instance"] = dict(INSTANCE, migration={"id": "m1", "status": "finished", "source": "hv1", "dest": "hv2"})
    with pytest.raises(AnsibleFilterError, match="in the middle of a resize.*confirm or revert"):
        F["resize_locate"](res, "web01")


def test_locate_bad_name():
    with pytest.raises(AnsibleFilterError, match="not a plain domain name"):
        F["resize_locate"]({}, "../etc/passwd")


def test_schedule_spreads_by_free_ram_and_explains_every_rejection():
    res = results(hv1=hv(), hv2=hv(alloc_mem=2000), hv3=hv(alloc_mem=100), hv4=hv(bridges=()),
                  hv5=hv(alloc_cpu=8), hv6=hv(arch="aarch64"))
    out = F["resize_schedule"](res, "hv1", INSTANCE, FLAVOR,
                               host_options={"hv7": {"maintenance": True}})
    assert out["host"] == "hv3" and out["ranked"] == ["hv3", "hv2"]
    assert set(out["rejected"]) == {"hv1", "hv4", "hv5", "hv6"}
    assert "is the source host" in out["rejected"]["hv1"][0]
    assert out["rejected"]["hv4"] == ["bridge vmbr0 missing"]
    assert "vCPUs: needs 2" in out["rejected"]["hv5"][0]
    assert "architecture aarch64" in out["rejected"]["hv6"][0]
    assert out["request"] == {"vcpus": 2, "memory_mb": 1024, "disk_bytes": GIB}
    assert out["explain"][0] == "hv1: is the source host" and out["explain"][1] == "hv4: bridge vmbr0 missing"


def test_schedule_counts_claims_and_maintenance():
    res = results(hv1=hv(), hv2=hv(claimed_memory_mb=3000), hv3=hv())
    with pytest.raises(AnsibleFilterError) as err:
        F["resize_schedule"](res, "hv1", INSTANCE, FLAVOR, host_options={"hv3": {"maintenance": True}})
    msg = str(err.value)
    assert "no valid host for VM web01 (2 vCPU, 1024 MiB)" in msg
    assert "hv2: RAM: needs 1024 MiB, 584 MiB free" in msg
    assert "hv3: in maintenance" in msg and "hv1: is the source host" in msg


def test_schedule_per_host_ratio_override():
    res = results(hv1=hv(), hv2=hv(cpus=1))
    with pytest.raises(AnsibleFilterError, match="vCPUs: needs 2, 1 of 1 free"):
        F["resize_schedule"](res, "hv1", INSTANCE, FLAVOR, host_options={"hv2": {"cpu_allocation_ratio": 1.0}})


def test_target_host_honoured_or_refused_with_its_reason():
    res = results(hv1=hv(), hv2=hv(), hv3=hv(alloc_mem=100), hv4=hv(alloc_mem=4000))
    assert F["resize_schedule"](res, "hv1", INSTANCE, FLAVOR, target_host="hv2")["host"] == "hv2"
    with pytest.raises(AnsibleFilterError, match="target host hv4 cannot take VM web01: RAM"):
        F["resize_schedule"](res, "hv1", INSTANCE, FLAVOR, target_host="hv4")
    with pytest.raises(AnsibleFilterError, match="target host hv9 is not among the hypervisors"):
        F["resize_schedule"](res, "hv1", INSTANCE, FLAVOR, target_host="hv9")


def test_same_host_only_when_allowed():
    res = results(hv1=hv())
    with pytest.raises(AnsibleFilterError, match="is the source host"):
        F["resize_schedule"](res, "hv1", INSTANCE, FLAVOR)
    assert F["resize_schedule"](res, "hv1", INSTANCE, FLAVOR, allow_same_host=True)["host"] == "hv1"


def test_same_host_counts_only_the_increase():
    # 3584 MiB allocatable on hv1, which already holds the VM: growing it 128 -> 1024 needs 896 more.
    res = results(hv1=hv(alloc_mem=3584 - 896))
    assert F["resize_schedule"](res, "hv1", INSTANCE, FLAVOR, allow_same_host=True)["host"] == "hv1"
    res = results(hv1=hv(alloc_mem=3584 - 856))
    with pytest.raises(AnsibleFilterError, match="RAM: needs 896 MiB, 856 MiB free"):
        F["resize_schedule"](res, "hv1", INSTANCE, FLAVOR, allow_same_host=True)


def test_migration_finds_both_ends():
    res = results(hv1=hv(), hv2=hv())
    res["hv1"]["instance"] = dict(INSTANCE, migration={"id": "m1", "status": "post-migrating", "source": "hv1", "dest": "hv2"})
    res["hv2"]["instance"] = dict(INSTANCE, migration={"id": "m1", "status": "finished", "source": "hv1", "dest": "hv2"})
    out = F["resize_migration"](res, "web01")
    assert out == {"id": "m1", "source": "hv1", "dest": "hv2", "status": {"hv1": "post-migrating", "hv2": "finished"}}


def _with_records(*recs):
    res = results(hv1=hv(), hv2=hv(), hv3=hv())
    for host, name, rec in recs:
        res[host]["hypervisor"]["domains"] = res[host]["hypervisor"].get("domains", []) + [{"name": name, "migration": rec}]
    return res


def test_due_finds_finished_resizes_older_than_the_window():
    res = _with_records(
        ("hv2", "old", {"id": "a", "status": "finished", "source": "hv1", "dest": "hv2", "updated": "2026-11-25T08:00:00Z"}),
        ("hv2", "new", {"id": "b", "status": "finished", "source": "hv1", "dest": "hv2", "updated": "2026-11-25T09:59:00Z"}),
        ("hv1", "old", {"id": "a", "status": "post-migrating", "source": "hv1", "dest": "hv2", "updated": "2026-11-25T08:00:00Z"}),
        ("hv1", "new", {"id": "b", "status": "post-migrating", "source": "hv1", "dest": "hv2", "updated": "2026-11-25T09:58:00Z"}),
        ("hv2", "gone", {"id": "c", "status": "confirmed", "source": "hv1", "dest": "hv2", "updated": "2026-11-20T08:00:00Z"}),
        # A destination that lies about its record's age, or about a migration its source does not know:
        ("hv3", "liar", {"id": "d", "status": "finished", "source": "hv1", "dest": "hv3", "updated": "2020-01-01T00:00:00Z"}),
        ("hv3", "new", {"id": "b", "status": "finished", "source": "hv1", "dest": "hv3", "updated": "2020-01-01T00:00:00Z"}),
    )
    now = "2026-11-25T10:00:00+00:00"
    assert F["resize_due"](res, 3600, now) == [{"instance": "old", "id": "a", "source": "hv1", "dest": "hv2", "age_seconds": 7200}]
    assert [d["instance"] for d in F["resize_due"](res, 0, now)] == ["old", "new", "new"]
    assert F["resize_due"](res, 86400, now) == []


@pytest.mark.parametrize("window,match", [(-1, "must not be negative"), ("soon", "whole number of seconds")])
def test_due_bad_window(window, match):
    with pytest.raises(AnsibleFilterError, match=match):
        F["resize_due"]({}, window, "2026-11-25T10:00:00Z")


def test_migration_none_open():
    with pytest.raises(AnsibleFilterError, match="has no resize waiting"):
        F["resize_migration"](results(hv1=hv()), "web01")


def test_flavor_filter_unknown():
    with pytest.raises(AnsibleFilterError, match="unknown flavor 'x'.*known flavors: a"):
        F["resize_flavor"]({"a": {"vcpus": 1, "memory_mb": 64, "root_gb": 1}}, "x")


def test_host_options_from_hostvars():
    hostvars = {"hv1": {"hypervisor_maintenance": True, "other": 1}, "hv2": {}}
    assert F["resize_host_options"](["hv1", "hv2"], hostvars) == {"hv1": {"maintenance": True}, "hv2": {}}


def test_a_host_speaks_only_for_itself_in_the_records():
    """A hostile host's record cannot steer the controller to another host or migration."""
    res = results(hv1=hv(), hv2=hv(), hv3=hv())
    res["hv3"]["instance"] = dict(INSTANCE, migration={"id": "evil", "status": "finished", "source": "hv1",
                                                       "dest": "hv2"})
    with pytest.raises(AnsibleFilterError, match="has no resize waiting"):
        F["resize_migration"](res, "web01")
    res["hv3"]["instance"] = dict(INSTANCE, migration={"id": "evil", "status": "finished", "source": "hv1",
                                                       "dest": "hv3; rm -rf /"})
    with pytest.raises(AnsibleFilterError, match="has no resize waiting"):
        F["resize_migration"](res, "web01")


def test_the_controller_renders_what_it_parsed_not_what_the_source_reported():
    xml = ("<domain type='qemu'><name>web01</name><uuid>u</uuid><memory unit='MiB'>128</memory><vcpu>1</vcpu>"
           "<devices><disk type='file' device='disk'><driver type='qcow2'/><source file='/i/web01.qcow2'/>"
           "<target dev='vda'/></disk></devices></domain>")
    lying = dict(INSTANCE, xml=xml, model={"name": "web01", "metadata": [
        "<hvr:record xmlns:hvr='https://hypervisor-resize.dev/xmlns/migration/1'>{}</hvr:record>"],
        "devices": ["<hostdev/>"], "sections": []})
    res = {"hv1": {"hypervisor": hv(), "instance": lying}, "hv2": {"hypervisor": hv(), "instance": None}}
    inst = F["resize_locate"](res, "web01")["instance"]
    assert inst["model"]["metadata"] == [] and all("hostdev" not in d for d in inst["model"]["devices"])
    assert [d["path"] for d in inst["copy_disks"]] == ["/i/web01.qcow2"]
    assert inst["copy_disks"][0]["allocation"] == GIB, "sizes still come from the source, per path"


# --- one operation per VM, and recovery ----------------------------------------------------------

def _rec(status, mid="m-1", **kw):
    return dict({"id": mid, "status": status, "source": "hv1", "dest": "hv2", "updated": "2026-12-01T10:00:00Z",
                 "new_flavor": FLAVOR, "old_power_state": "running"}, **kw)


def _results(src=None, dst=None, claim=None, busy=None, down=()):
    inst = dict(INSTANCE, migration=src, busy=busy, model={"name": "web01"})
    out = {"hv1": {"hypervisor": hv(migrations=[]), "instance": inst},
           "hv2": {"hypervisor": hv(migrations=[claim] if claim else []),
                   "instance": dict(INSTANCE, migration=dst, busy=None) if dst else None},
           "hv3": {"hypervisor": hv(migrations=[]), "instance": None}}
    for h in down:
        out[h] = {"failed": True, "msg": "unreachable"}
    return out


def test_a_busy_vm_is_refused_by_every_entry_point_naming_the_operation():
    busy = {"operation": "power-off and copy", "migration_id": "m-1", "pid": 42, "since": "t"}
    res = _results(src=_rec("migrating"), busy=busy)
    for name, args in (("resize_locate", ("web01",)), ("resize_migration", ("web01",)),
                       ("resize_recovery", ("web01",))):
        with pytest.raises(AnsibleFilterError, match=r"hv1 runs power-off and copy of migration m-1 \(pid 42"):
            F[name](res, *args)


def test_locate_says_recover_for_a_resize_that_did_not_end_and_confirm_for_one_that_waits():
    with pytest.raises(AnsibleFilterError, match="run playbooks/recover.yml -e instance=web01"):
        F["resize_locate"](_results(src=_rec("migrating")), "web01")
    with pytest.raises(AnsibleFilterError, match="confirm or revert it first"):
        F["resize_locate"](_results(src=_rec("post-migrating"), dst=_rec("finished")), "web01")


def test_recovery_rolls_back_on_both_hosts_or_on_those_that_answer():
    claim = {"id": "m-1", "instance": "web01", "status": "pre-migrating", "source": "hv1", "dest": "hv2"}
    plan = F["resize_recovery"](_results(src=_rec("post-migrating"), claim=claim), "web01")
    assert (plan["id"], plan["source"], plan["dest"], plan["steps"]) == ("m-1", "hv1", "hv2", ["destination", "source"])
    plan = F["resize_recovery"](_results(src=_rec("migrating"), claim=claim, down=("hv2",)), "web01")
    assert plan["steps"] == ["source"] and "not reached: destination hv2" in plan["msg"]
    # the source rolled back already, the destination's claim is what is left
    plan = F["resize_recovery"](_results(src=_rec("error", rolled_back=True), claim=claim), "web01")
    assert plan["steps"] == ["destination", "source"]


def test_recovery_resumes_only_a_completed_copy_or_a_begun_confirm():
    claim = {"id": "m-1", "instance": "web01", "status": "pre-migrating", "source": "hv1", "dest": "hv2"}
    plan = F["resize_recovery"](_results(src=_rec("post-migrating"), claim=claim), "web01", "resume")
    assert plan["steps"] == ["finish"] and plan["new_flavor"] == FLAVOR and plan["old_power_state"] == "running"
    with pytest.raises(AnsibleFilterError, match="its copy did not complete"):
        F["resize_recovery"](_results(src=_rec("migrating"), claim=claim), "web01", "resume")
    plan = F["resize_recovery"](_results(src=_rec("post-migrating"), dst=_rec("confirming")), "web01", "resume")
    assert plan["steps"] == ["confirm"]
    with pytest.raises(AnsibleFilterError, match="the confirm has begun"):
        F["resize_recovery"](_results(src=_rec("post-migrating"), dst=_rec("confirming")), "web01", "rollback")


def test_recovery_with_nothing_open_does_nothing():
    plan = F["resize_recovery"](_results(src=_rec("reverted")), "web01")
    assert plan["id"] is None and plan["steps"] == []


def test_recovery_never_starts_the_original_while_the_destination_may_run_it():
    claim = {"id": "m-1", "instance": "web01", "status": "pre-migrating", "source": "hv1", "dest": "hv2"}
    with pytest.raises(AnsibleFilterError, match="did not answer; it may run the VM"):
        F["resize_recovery"](_results(src=_rec("post-migrating", copied=True), claim=claim, down=("hv2",)), "web01")
    with pytest.raises(AnsibleFilterError, match="did not answer; it may run the VM"):
        F["resize_recovery"](_results(src=_rec("error", copied=True), claim=claim, down=("hv2",)), "web01")


def test_recovery_of_a_same_host_resize_reverts_in_place_and_a_claim_speaks_only_for_its_host():
    same = _rec("finished", dest="hv1", same_host=True)
    res = _results(src=same)
    assert F["resize_recovery"](res, "web01")["steps"] == ["destination", "source"]
    with pytest.raises(AnsibleFilterError, match="the confirm has begun"):
        F["resize_recovery"](_results(src=_rec("confirming", dest="hv1", same_host=True)), "web01")
    # hv3 reports a claim that names hv2 as its destination: not believed.
    res = _results(src=_rec("reverted"))
    res["hv3"]["hypervisor"]["migrations"] = [
        {"id": "m-9", "instance": "web01", "status": "pre-migrating", "source": "hv1", "dest": "hv2"}]
    assert F["resize_recovery"](res, "web01")["id"] is None


def test_schedule_rejects_a_host_without_swtpm_for_a_vm_with_an_emulated_tpm():
    xml = """<domain type='qemu'><name>web01</name><uuid>6f1c3a4e-8d2b-4b7e-9a51-0c2d3e4f5a6b</uuid>
      <memory unit='MiB'>128</memory><vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>
      <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>
      <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/web01.qcow2'/><target dev='vda' bus='virtio'/></disk>
      <tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm></devices></domain>"""
    inst = dict(INSTANCE, xml=xml)
    roots = {"storage_roots": ["/var/lib/libvirt/images"]}
    res = {"hv1": {"hypervisor": hv(**roots), "instance": inst},
           "hv2": {"hypervisor": hv(swtpm=False, **roots), "instance": None},
           "hv3": {"hypervisor": hv(swtpm=True, alloc_mem=1000, **roots), "instance": None}}
    out = F["resize_schedule"](res, "hv1", inst, FLAVOR)
    assert out["host"] == "hv3"
    assert out["rejected"]["hv2"] == ["no swtpm for the VM's emulated TPM (install swtpm there)"]
    # Without a TPM, swtpm does not matter.
    res["hv1"]["instance"] = plain = dict(inst, xml=xml.replace(
        "<tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>", ""))
    assert F["resize_schedule"](res, "hv1", plain, FLAVOR)["ranked"] == ["hv2", "hv3"]
