import os

import jinja2
import pytest
from lxml import etree

from ansible_collections.hypervisor.resize.plugins.module_utils import domain
from ansible_collections.hypervisor.resize.plugins.module_utils.errors import ValidationError

HERE = os.path.dirname(__file__)
FIXTURE = os.path.join(HERE, "..", "..", "fixtures", "web01.xml")
TEMPLATE = os.path.join(HERE, "..", "..", "..", "..", "templates", "domain.xml.j2")


@pytest.fixture
def xml():
    with open(FIXTURE) as fh:
        return fh.read()


def render(model, vcpus, memory_mb):
    with open(TEMPLATE) as fh:
        tmpl = jinja2.Template(fh.read(), trim_blocks=True)  # as ansible's template lookup does
    return tmpl.render(resize_domain=model, resize_new_flavor={"vcpus": vcpus, "memory_mb": memory_mb})


def test_model_reads_size_identity_disks_and_nics(xml):
    m = domain.model_from_xml(xml)
    assert (m["name"], m["uuid"], m["type"]) == ("web01", "6f1c3a4e-8d2b-4b7e-9a51-0c2d3e4f5a6b", "qemu")
    assert (m["vcpus"], m["memory_mb"]) == (1, 128)
    assert [d["target"] for d in m["disks"]] == ["vda", "vdb", "vdc", "hdc"]
    assert m["disks"][0]["format"] == "qcow2" and m["disks"][1]["format"] == "raw"
    assert m["disks"][2]["network"] == "rbd" and m["disks"][3]["readonly"]
    assert m["interfaces"] == [{"type": "bridge", "mac": "52:54:00:12:34:56", "source": {"bridge": "vmbr0"}}]
    assert m["boot_files"] == ["/var/lib/libvirt/boot/hvr-guest.vmlinuz", "/var/lib/libvirt/boot/hvr-guest.initrd"]
    assert domain.root_disk(m)["path"] == "/var/lib/libvirt/images/web01.qcow2"
    # Only writable file-backed disks move: not the rbd disk, not the ISO.
    assert [d["target"] for d in domain.copy_disks(m)] == ["vda", "vdb"]


def test_our_record_is_not_carried_into_the_model_but_other_metadata_is(xml):
    m = domain.model_from_xml(xml)
    assert len(m["metadata"]) == 1 and "tier=web" in m["metadata"][0]
    assert not any("hypervisor-resize.dev" in s for s in m["sections"] + m["metadata"])


CPU_XML = """<domain type='qemu'><name>w</name><uuid>00000000-0000-0000-0000-000000000002</uuid>
<memory unit='MiB'>1024</memory><vcpu placement='static' cpuset='0-1'%(current)s>2</vcpu>%(vcpus)s
<cputune><vcpupin vcpu='0' cpuset='0'/><vcpupin vcpu='1' cpuset='0-1'/><emulatorpin cpuset='1'/></cputune>
<cpu mode='custom'><model>qemu64</model><topology sockets='1' dies='1' cores='2' threads='1'/>%(numa)s</cpu>
<devices/></domain>"""


def cpu_xml(current="", vcpus="", numa=""):
    return CPU_XML % {"current": current, "vcpus": vcpus, "numa": numa}


def test_the_topology_keeps_its_sockets_and_scales_cores():
    m = domain.resized_model(cpu_xml(), 4, 2048)
    root = etree.fromstring(render(m, 4, 2048).encode())
    assert root.find("cpu/topology").attrib == {"sockets": "1", "dies": "1", "cores": "4", "threads": "1"}
    assert any("cores 2 -> 4" in w for w in m["warnings"])
    # The cpuset and the pins stay; the new vCPUs follow the cpuset.
    assert root.find("vcpu").get("cpuset") == "0-1" and root.find("vcpu").get("placement") == "static"
    assert [(p.get("vcpu"), p.get("cpuset")) for p in root.findall("cputune/vcpupin")] == [("0", "0"), ("1", "0-1")]
    assert root.find("cputune/emulatorpin").get("cpuset") == "1"


def test_a_topology_that_does_not_divide_is_refused_or_flattened_on_request():
    two_sockets = cpu_xml().replace("sockets='1' dies='1' cores='2'", "sockets='2' dies='1' cores='1'")
    with pytest.raises(ValidationError, match=r"3 vCPUs do not fit the VM's CPU topology \(2 sockets"):
        domain.resized_model(two_sockets, 3, 1024)
    m = domain.resized_model(two_sockets, 3, 1024, "flatten")
    assert etree.fromstring(render(m, 3, 1024).encode()).find("cpu/topology") is None
    assert any("resize_cpu_topology=flatten" in w for w in m["warnings"])
    m = domain.resized_model(two_sockets, 4, 1024)
    assert etree.fromstring(render(m, 4, 1024).encode()).find("cpu/topology").get("sockets") == "2"


def test_pins_of_vcpus_that_go_are_removed_with_a_warning():
    m = domain.resized_model(cpu_xml(), 1, 1024)
    root = etree.fromstring(render(m, 1, 1024).encode())
    assert [p.get("vcpu") for p in root.findall("cputune/vcpupin")] == ["0"]
    assert any("vcpupin vcpu='1'> removed" in w for w in m["warnings"])
    sched = cpu_xml().replace("<emulatorpin cpuset='1'/>", "<vcpusched vcpus='0-1' scheduler='batch'/>")
    with pytest.raises(ValidationError, match="vcpusched vcpus='0-1'> names vCPUs"):
        domain.resized_model(sched, 1, 1024)


def test_numa_cells_split_evenly_or_are_refused():
    numa = "<numa><cell id='0' cpus='0' memory='524288' unit='KiB'/><cell id='1' cpus='1' memory='524288' unit='KiB'/></numa>"
    m = domain.resized_model(cpu_xml(numa=numa), 4, 2048)
    cells = etree.fromstring(render(m, 4, 2048).encode()).findall("cpu/numa/cell")
    assert [(c.get("cpus"), c.get("memory")) for c in cells] == [("0-1", "1048576"), ("2-3", "1048576")]
    with pytest.raises(ValidationError, match="do not split evenly over the VM's 2 NUMA cells"):
        domain.resized_model(cpu_xml(numa=numa), 3, 2048)


def test_the_size_is_what_the_vm_has_now_and_the_rest_its_hot_plug_ceilings():
    m = domain.model_from_xml(cpu_xml(current=" current='1'", vcpus="<vcpus><vcpu id='0' enabled='yes'/></vcpus>"))
    assert (m["vcpus"], m["max_vcpus"]) == (1, 2)
    assert not any("<vcpus>" in w for w in m["warnings"]), "vCPU 0 enabled is what current='1' says"
    m = domain.resized_model(cpu_xml(current=" current='1'",
                                     vcpus="<vcpus><vcpu id='0' enabled='no'/><vcpu id='1' enabled='yes'/></vcpus>"),
                             2, 1024)
    assert any("<vcpus>" in w and "dropped" in w for w in m["warnings"])
    ballooned = cpu_xml().replace("<vcpu", "<currentMemory unit='MiB'>512</currentMemory><vcpu", 1)
    m = domain.model_from_xml(ballooned)
    assert (m["memory_mb"], m["max_memory_mb"]) == (512, 1024)
    with pytest.raises(ValidationError, match="outside 1..<vcpu>"):
        domain.model_from_xml(cpu_xml(current=" current='3'"))


def test_rendered_xml_keeps_every_device_and_identity_at_the_new_size(xml):
    m = domain.model_from_xml(xml)
    out = render(m, 2, 256)
    parser = etree.XMLParser(remove_blank_text=True)
    new = etree.fromstring(out.encode(), parser)
    old = etree.fromstring(xml.encode(), parser)
    assert new.findtext("name") == "web01" and new.findtext("uuid") == old.findtext("uuid")
    assert new.findtext("vcpu") == "2"
    assert domain.to_bytes(new.findtext("memory"), new.find("memory").get("unit")) == 256 * 1024 * 1024

    def strip(el):
        return etree.tostring(el, method="c14n")

    assert [strip(d) for d in new.find("devices")] == [strip(d) for d in old.find("devices")]
    assert new.findtext("title") == "Web server"
    assert new.find("os/kernel").text == "/var/lib/libvirt/boot/hvr-guest.vmlinuz"
    s = domain.summary(out)
    assert s["macs"] == ["52:54:00:12:34:56"] and (s["vcpus"], s["memory_mb"]) == (2, 256)


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", "a b", "x" * 64, "-lead", "a;rm", None, ".."])
def test_plain_domain_names_only(bad):
    with pytest.raises(ValidationError, match="not a plain domain name"):
        domain.check_domain_name(bad)


@pytest.mark.parametrize("good", ["web01", "a", "db-2.prod", "VM_7"])
def test_plain_names_pass(good):
    assert domain.check_domain_name(good) == good


@pytest.mark.parametrize("value,unit,expected", [
    ("131072", "KiB", 128 * 1024 * 1024), ("128", "MiB", 128 * 1024 * 1024), ("1", "GiB", 1024 ** 3),
    ("1000", "KB", 1000000), ("5", "b", 5),
])
def test_units(value, unit, expected):
    assert domain.to_bytes(value, unit) == expected


def test_garbage_xml_is_a_clear_error():
    with pytest.raises(ValidationError, match="does not parse"):
        domain.model_from_xml("<domain>")


def test_the_nvram_store_moves_with_the_disks_and_a_block_device_never_does():
    xml = ("<domain type='qemu'><name>u</name><uuid>00000000-0000-0000-0000-000000000003</uuid>"
           "<memory unit='MiB'>128</memory><vcpu>1</vcpu><os><type>hvm</type>"
           "<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>"
           "<nvram>/var/lib/libvirt/qemu/nvram/u_VARS.fd</nvram></os><devices>"
           "<disk type='file' device='disk'><driver type='qcow2'/><source file='/i/u.qcow2'/><target dev='vda'/></disk>"
           "<disk type='block' device='disk'><driver type='raw'/><source dev='/dev/vg0/u'/><target dev='vdb'/></disk>"
           "</devices></domain>")
    m = domain.model_from_xml(xml)
    assert [d["path"] for d in domain.copy_disks(m)] == ["/i/u.qcow2"]
    assert [(d["path"], d["device"]) for d in domain.moved_files(m)] == [
        ("/i/u.qcow2", "disk"), ("/var/lib/libvirt/qemu/nvram/u_VARS.fd", "nvram")]
    assert domain.root_disk(m)["path"] == "/i/u.qcow2"
