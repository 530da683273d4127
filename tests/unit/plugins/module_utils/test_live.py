"""Live or cold, and the ceilings a cold resize writes: the pure rules of live.py."""

import os

import jinja2
import pytest
from lxml import etree

from ansible_collections.hypervisor.resize.plugins.module_utils import domain, live
from ansible_collections.hypervisor.resize.plugins.module_utils.errors import ValidationError
from ansible_collections.hypervisor.resize.plugins.module_utils.flavor import GIB, resize_plan

TEMPLATE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "templates", "domain.xml.j2")

XML = """<domain type='qemu'><name>web01</name><uuid>4c1e0b6f-0c7e-4a7b-9b55-2a8f1f0e6d11</uuid>
<memory unit='MiB'>%(max_mem)d</memory><currentMemory unit='MiB'>%(mem)d</currentMemory>
<vcpu placement='static'%(current)s>%(max_vcpus)d</vcpu>
<os><type arch='x86_64'>hvm</type></os>%(cpu)s
<devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/var/lib/libvirt/images/web01.qcow2'/>
<target dev='vda' bus='virtio'/></disk>
<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/var/lib/libvirt/images/web01-swap.img'/>
<target dev='vdb' bus='virtio'/></disk>
<interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='vmbr0'/><model type='virtio'/></interface>
%(balloon)s</devices></domain>"""


def xml(vcpus=1, max_vcpus=3, mem=128, max_mem=384, cpu="", balloon=""):
    return XML % {"current": " current='%d'" % vcpus if vcpus != max_vcpus else "", "max_vcpus": max_vcpus,
                  "mem": mem, "max_mem": max_mem, "cpu": cpu, "balloon": balloon}


def instance(state="running", swap=GIB, **kw):
    return {"name": "web01", "uuid": "4c1e0b6f-0c7e-4a7b-9b55-2a8f1f0e6d11", "state": state, "xml": xml(**kw),
            "vcpus": kw.get("vcpus", 1), "memory_mb": kw.get("mem", 128),
            "root_disk": {"target": "vda", "path": "/var/lib/libvirt/images/web01.qcow2", "virtual_size": GIB},
            "swap_disk": {"target": "vdb", "path": "/var/lib/libvirt/images/web01-swap.img", "virtual_size": swap}}


def flavor(vcpus=2, memory_mb=256, root_gb=2, swap_mb=1024):
    return {"name": "f", "vcpus": vcpus, "memory_mb": memory_mb, "root_gb": root_gb, "ephemeral_gb": 0,
            "swap_mb": swap_mb}


def decide(inst, fl, mode="auto", **kw):
    return live.decide(inst, resize_plan(inst, fl), mode, **kw)


def test_a_running_vm_within_its_ceilings_goes_live_memory_first_then_vcpus_then_disks():
    got = decide(instance(), flavor())
    assert got["path"] == "live"
    assert [s.split(" ")[0] for s in got["steps"]] == ["memory", "wait", "vCPUs", "wait", "root"]
    assert got["disks"] == [{"target": "vda", "path": "/var/lib/libvirt/images/web01.qcow2", "before": GIB,
                             "after": 2 * GIB, "role": "root"}]


@pytest.mark.parametrize("inst, fl, reason", [
    (instance(state="shutoff"), flavor(), "the VM is shutoff: only a running VM is resized live"),
    (instance(), flavor(vcpus=4), "4 vCPUs exceed the VM's hot-plug ceiling of 3 (<vcpu>)"),
    (instance(vcpus=2), flavor(vcpus=1), "fewer vCPUs (2 -> 1): vCPUs are not taken away from a running guest"),
    (instance(), flavor(memory_mb=512), "512 MiB of memory exceed the VM's ceiling of 384 MiB (<memory>)"),
    (instance(balloon="<memballoon model='none'/>"), flavor(), "the VM has no memory balloon"),
    (instance(), flavor(swap_mb=2048), "the swap disk changes size"),
    (instance(mem=256), flavor(memory_mb=128), "less memory (256 -> 128 MiB): memory is not taken away"),
    (dict(instance(), running_vcpus=2), flavor(), "the running VM has 2 vCPUs, its definition 1"),
])
def test_what_does_not_fit_goes_cold_with_every_reason_or_is_refused_with_mode_live(inst, fl, reason):
    got = decide(inst, fl)
    assert got["path"] == "cold" and any(reason in why for why in got["why"]), got["why"]
    with pytest.raises(ValidationError, match="cannot be resized live: ") as err:
        decide(inst, fl, "live")
    assert reason in err.value.full_message() and "nothing was changed" in err.value.full_message()


def test_another_host_asked_for_or_a_full_host_is_cold_and_mode_cold_is_always_cold():
    assert "resize_target_host is hv2" in decide(instance(), flavor(), target_host="hv2", source="hv1")["why"][0]
    got = decide(instance(), flavor(), host_reasons=["RAM: needs 128 MiB, 0 MiB free"], source="hv1")
    assert got["path"] == "cold" and got["why"] == ["the VM's host hv1 cannot take the increase: RAM: needs 128 MiB, "
                                                    "0 MiB free"]
    assert decide(instance(), flavor(), "cold") == {"path": "cold", "why": ["resize_mode=cold"], "steps": [],
                                                    "disks": []}
    with pytest.raises(ValidationError, match="resize_mode must be one of auto, live, cold, got 'fast'"):
        decide(instance(), flavor(), "fast")


def test_ceilings_auto_are_the_largest_flavor_that_fits_the_destination():
    flavors = {"s": flavor(2, 256), "m": flavor(3, 384), "xl": flavor(16, 65536)}
    host = {"cpus": 4, "memory_mb": 4096}
    assert live.ceilings(xml(), flavor(2, 256), flavors, host) == {"vcpus": 3, "memory_mb": 384, "warnings": []}
    assert live.ceilings(xml(), flavor(2, 256), flavors, host, 0, 0) == {"vcpus": 2, "memory_mb": 256, "warnings": []}
    assert live.ceilings(xml(), flavor(2, 256), flavors, host, 8, "1024") == {"vcpus": 8, "memory_mb": 1024,
                                                                              "warnings": []}


@pytest.mark.parametrize("max_vcpus, max_mem, match", [
    (1, "auto", "resize_max_vcpus=1 is below the flavor's 2"),
    ("auto", 8192, "resize_max_memory_mb=8192 is more than the destination has"),
    ("many", "auto", "resize_max_vcpus must be auto, 0 or a whole number, got 'many'"),
    ("auto", -1, "resize_max_memory_mb must be auto, 0 or a whole number"),
    (True, "auto", "resize_max_vcpus must be auto, 0 or a whole number"),
    (300, "auto", r"resize_max_vcpus=300 is more than a VM can have here \(255\)"),
])
def test_bad_ceilings_are_refused_naming_the_variable(max_vcpus, max_mem, match):
    with pytest.raises(ValidationError, match=match):
        live.ceilings(xml(), flavor(2, 256), {}, {"cpus": 4, "memory_mb": 4096}, max_vcpus, max_mem)


def test_a_migration_keeping_its_ceilings_lowers_one_the_destination_cannot_carry():
    got = live.ceilings(xml(), flavor(2, 256), {}, {"cpus": 4, "memory_mb": 4096}, 300, 8192, lower_to_fit=True)
    assert (got["vcpus"], got["memory_mb"]) == (255, 4096)
    assert got["warnings"] == ["the vCPU hot-plug ceiling is lowered from 300 to 255: a VM can have no more here",
                               "the memory hot-plug ceiling is lowered from 8192 to 4096: the destination has 4096 MiB"]
    # What fits is kept as it is.
    got = live.ceilings(xml(), flavor(2, 256), {}, {"cpus": 4, "memory_mb": 4096}, 8, 1024, lower_to_fit=True)
    assert (got["vcpus"], got["memory_mb"], got["warnings"]) == (8, 1024, [])


def test_no_ceiling_where_the_definition_ties_the_maximum_and_a_warning_says_so():
    flavors = {"m": flavor(3, 384)}
    host = {"cpus": 4, "memory_mb": 4096}
    topo = "<cpu><topology sockets='1' dies='1' cores='1' threads='1'/></cpu>"
    got = live.ceilings(xml(cpu=topo), flavor(2, 256), flavors, host)
    assert got["vcpus"] == 2 and got["memory_mb"] == 384 and "<cpu><topology>" in got["warnings"][0]
    numa = "<cpu><numa><cell id='0' cpus='0' memory='131072' unit='KiB'/></numa></cpu>"
    got = live.ceilings(xml(cpu=numa), flavor(2, 256), flavors, host)
    assert (got["vcpus"], got["memory_mb"]) == (2, 256) and len(got["warnings"]) == 2
    got = live.ceilings(xml(balloon="<memballoon model='none'/>"), flavor(2, 256), flavors, host)
    assert (got["vcpus"], got["memory_mb"]) == (3, 256) and "no memory balloon" in got["warnings"][0]


def test_the_template_writes_the_flavor_as_current_and_the_ceilings_as_maximum():
    model = domain.model_from_xml(xml())

    def render(**extra):
        with open(TEMPLATE) as fh:
            tmpl = jinja2.Template(fh.read(), trim_blocks=True)  # as ansible's template lookup does
        return tmpl.render(resize_domain=model, resize_new_flavor=flavor(2, 256), **extra)

    out = render(resize_ceilings={"vcpus": 3, "memory_mb": 384})
    root = etree.fromstring(out.encode())
    assert (root.find("vcpu").get("current"), root.findtext("vcpu")) == ("2", "3")
    assert (root.findtext("currentMemory"), root.findtext("memory")) == ("256", "384")
    again = domain.model_from_xml(out)
    assert (again["vcpus"], again["max_vcpus"], again["memory_mb"], again["max_memory_mb"]) == (2, 3, 256, 384)
    root = etree.fromstring(render().encode())  # an operator's call without ceilings: none
    assert root.find("vcpu").get("current") is None and root.findtext("memory") == "256"


def test_the_definition_after_a_live_resize_is_what_libvirt_writes():
    after = live.after_xml(xml(), 2, 256)
    assert "<vcpu placement=\"static\" current=\"2\">3</vcpu>" in after.replace("'", '"')
    assert "<currentMemory unit=\"KiB\">262144</currentMemory>" in after.replace("'", '"')
    assert "current=" not in live.after_xml(xml(), 3, 256).split("<vcpu")[1].split(">")[0]


@pytest.mark.parametrize("element, named", [
    ("<memoryBacking><hugepages/></memoryBacking>", "<memoryBacking><hugepages>"),
    ("<memoryBacking><locked/></memoryBacking>", "<memoryBacking><locked>"),
    ("<memoryBacking><allocation mode='immediate'/></memoryBacking>", "allocation mode='immediate'"),
    ("<launchSecurity type='sev'/>", "<launchSecurity>"),
])
def test_no_memory_ceiling_where_qemu_holds_all_of_memory_whatever_the_balloon_says(element, named):
    got = live.ceilings(xml(cpu=element), flavor(2, 256), {"m": flavor(3, 384)}, {"cpus": 4, "memory_mb": 4096})
    assert (got["vcpus"], got["memory_mb"]) == (3, 256) and "no memory ceiling" in got["warnings"][0]
    assert named in got["warnings"][0]
    for devices in ("<hostdev mode='subsystem' type='pci'/>", "<memballoon model='virtio' autodeflate='on'/>"):
        got = live.ceilings(xml(balloon=devices), flavor(2, 256), {"m": flavor(3, 384)}, {"cpus": 4, "memory_mb": 4096})
        assert got["memory_mb"] == 256 and "no memory ceiling" in got["warnings"][0]


def test_with_a_guest_agent_channel_the_plan_asks_the_guest_about_its_vcpus():
    channel = "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>"
    got = decide(instance(balloon=channel), flavor())
    assert "wait up to 60s for the guest to have 2 vCPUs online (asked through its guest agent)" in got["steps"]
    assert "no guest agent channel: the guest onlines them itself, unchecked" in decide(instance(), flavor())["steps"][3]


def test_auto_is_at_most_twice_the_new_size():
    flavors = {"m": flavor(3, 384), "big": flavor(8, 65536)}
    got = live.ceilings(xml(), flavor(1, 128), flavors, {"cpus": 64, "memory_mb": 1 << 20})
    assert (got["vcpus"], got["memory_mb"]) == (1, 128), "3 vCPUs and 384 MiB are more than twice 1 / 128"
    got = live.ceilings(xml(), flavor(2, 256), flavors, {"cpus": 64, "memory_mb": 1 << 20})
    assert (got["vcpus"], got["memory_mb"]) == (3, 384)


def test_a_flavor_nobody_asked_for_does_not_block_the_ceilings():
    got = live.ceilings(xml(), flavor(2, 256), {"m": flavor(3, 384), "bad": {"vcpus": "x"}}, {"cpus": 4, "memory_mb": 4096})
    assert (got["vcpus"], got["memory_mb"]) == (3, 384)
