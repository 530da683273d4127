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


def test_cpu_topology_is_dropped_with_a_warning(xml):
    m = domain.model_from_xml(xml)
    assert not any("<topology" in s for s in m["sections"])
    assert any("topology" in w for w in m["warnings"])


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


def test_numa_is_refused():
    xml = "<domain type='qemu'><name>a</name><memory>1024</memory><cpu><numa><cell id='0' cpus='0' memory='1024'/></numa></cpu><devices/></domain>"
    with pytest.raises(ValidationError, match="NUMA"):
        domain.model_from_xml(xml)


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
