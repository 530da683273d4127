# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The table of what a move carries (module_utils/parts.py) and the files every step reads from it."""

from __future__ import annotations

import os

import pytest

from ansible_collections.hypervisor.resize.plugins.module_utils import parts
from ansible_collections.hypervisor.resize.plugins.module_utils.domain import model_from_xml, moved_files
from ansible_collections.hypervisor.resize.plugins.module_utils.errors import ValidationError

UUID = "e84725fa-b8df-4eaa-92e7-0631fa500a3b"
XML = """<domain type='qemu'><name>vm</name><uuid>%(uuid)s</uuid><memory unit='MiB'>128</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='q35'>hvm</type>
<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
<nvram>/var/lib/libvirt/qemu/nvram/vm_VARS.fd</nvram></os>
<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file='/var/lib/libvirt/images/vm.qcow2'/><target dev='vda' bus='virtio'/></disk>%(tpm)s</devices></domain>"""
TPM2 = "<tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>"


def _xml(tpm=TPM2, uuid=UUID):
    return XML % {"uuid": uuid, "tpm": tpm}


def test_the_docs_print_the_table_the_code_reads():
    doc = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "docs", "architecture.md")
    with open(doc) as fh:
        text = fh.read()
    assert parts.markdown_table() in text
    assert len(set(parts.PART_KEYS)) == len(parts.PARTS)


def test_state_files_are_the_nvram_and_the_tpm_state_made_from_the_uuid():
    files = {d["device"]: d for d in model_from_xml(_xml())["disks"]}
    assert files["nvram"]["path"] == "/var/lib/libvirt/qemu/nvram/vm_VARS.fd"
    assert files["tpm"]["path"] == "/var/lib/libvirt/swtpm/%s/tpm2/tpm2-00.permall" % UUID
    assert files["tpm"]["optional"] is True
    tpm12 = {d["device"]: d for d in model_from_xml(_xml(TPM2.replace("2.0", "1.2")))["disks"]}["tpm"]
    assert tpm12["path"] == "/var/lib/libvirt/swtpm/%s/tpm1.2/tpm-00.permall" % UUID
    # A passthrough TPM has no state of its own (and is refused by the review, D1).
    host_tpm = "<tpm model='tpm-tis'><backend type='passthrough'><device path='/dev/tpm0'/></backend></tpm>"
    assert "tpm" not in {d["device"] for d in model_from_xml(_xml(host_tpm))["disks"]}


def test_an_optional_state_file_moves_only_once_a_host_found_it():
    disks = model_from_xml(_xml())["disks"]
    assert [d["device"] for d in moved_files(disks)] == ["disk", "nvram"]
    assert [d["device"] for d in moved_files(disks, every=True)] == ["disk", "nvram", "tpm"]
    sized = [dict(d, allocation=8192) if d["device"] == "tpm" else d for d in disks]
    assert [d["device"] for d in moved_files(sized)] == ["disk", "nvram", "tpm"]


@pytest.mark.parametrize("uuid", ["../../../etc", "E84725FA-B8DF-4EAA-92E7-0631FA500A3B", "", None,
                                  UUID + "/x", UUID[:-1]])
def test_a_tpm_path_is_never_made_from_anything_but_a_canonical_uuid(uuid):
    with pytest.raises(ValidationError):
        parts.tpm_state_path(uuid, "2.0")
    assert "tpm" not in {d["device"] for d in model_from_xml(_xml(uuid=uuid or ""))["disks"]} if uuid else True


def test_prep_makes_the_tpm_directories_and_revert_may_remove_only_those():
    entry = {"device": "tpm", "path": parts.tpm_state_path(UUID, "2.0")}
    top = "/var/lib/libvirt/swtpm/" + UUID
    assert parts.made_dirs(entry, UUID) == [top, top + "/tpm2"]
    assert parts.made_dirs({"device": "nvram", "path": "/var/lib/libvirt/qemu/nvram/x"}, UUID) == []
    assert parts.may_make(UUID) == {top, top + "/tpm2", top + "/tpm1.2"}
    assert "/var/lib/libvirt/swtpm" not in parts.may_make(UUID)


def test_the_plan_names_what_travels_and_what_is_refused():
    inst = {"moved_files": [{"device": "disk"}, {"device": "disk"}, {"device": "nvram"}, {"device": "tpm"}],
            "autostart": True}
    assert parts.carried(inst) == ["2 disk(s)", "UEFI NVRAM", "TPM state", "autostart"]
    got = parts.uncarried({"snapshots": ["s1", "s2"], "managed_save": True, "checkpoints": ["c1"],
                           "tpm_extra": ["/var/lib/libvirt/swtpm/%s/tpm2/tpm2-00.volatilestate" % UUID]})
    assert len(got) == 4 and "s1, s2" in got[0] and "managed-save" in got[1] and "checkpoint(s) c1" in got[2]
    assert "volatilestate" in got[3]
    assert parts.uncarried({"snapshots": [], "managed_save": False}) == []


AUTO = """<domain type='qemu'><name>vm</name><uuid>%s</uuid><memory unit='MiB'>128</memory><vcpu>1</vcpu>
<os firmware='efi'><type arch='x86_64' machine='q35'>hvm</type><firmware><feature enabled='no' name='secure-boot'/>
</firmware><kernel>/var/lib/libvirt/boot/k</kernel></os><devices/></domain>""" % UUID
LIVE = """<domain type='qemu' id='3'><name>vm</name><uuid>%s</uuid><memory unit='MiB'>128</memory><vcpu>1</vcpu>
<os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
<nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/var/lib/libvirt/qemu/nvram/vm_VARS.fd</nvram>
<kernel>/var/lib/libvirt/boot/k</kernel></os><devices/></domain>""" % UUID


def test_a_firmware_libvirt_chose_is_pinned_from_the_running_domain():
    from ansible_collections.hypervisor.resize.plugins.module_utils.domain import (
        firmware_pin,
        parse_xml,
        pin_firmware,
    )
    xml, pinned = pin_firmware(AUTO, firmware_pin(LIVE))
    assert pinned
    os_el = parse_xml(xml).find("os")
    assert os_el.get("firmware") is None and os_el.find("firmware") is None
    assert [c.tag for c in os_el] == ["type", "loader", "nvram", "kernel"]
    assert os_el.find("loader").attrib == {"readonly": "yes", "type": "pflash"}
    assert os_el.findtext("nvram") == "/var/lib/libvirt/qemu/nvram/vm_VARS.fd"
    assert os_el.find("nvram").get("template") == "/usr/share/OVMF/OVMF_VARS_4M.fd"
    assert os_el.find("type").get("machine") == "q35", "only the firmware is taken from the running domain"
    # The store then travels like any NVRAM store.
    assert [d["device"] for d in moved_files(model_from_xml(xml)["disks"])] == ["nvram"]
    # Nothing to pin: shut off (no live XML), or the definition names its firmware already.
    assert pin_firmware(AUTO, None) == (AUTO, False)
    assert pin_firmware(_xml(), firmware_pin(LIVE)) == (_xml(), False)
    assert parse_xml(xml).find("features") is None, "no SMM where libvirt did not turn it on"
    # Secure Boot: libvirt turned SMM on in the running domain; the pinned definition keeps it on.
    secure = LIVE.replace("<loader readonly='yes'", "<loader readonly='yes' secure='yes'").replace(
        "</os>", "</os><features><acpi/><smm state='on'/></features>")
    root = parse_xml(pin_firmware(AUTO, firmware_pin(secure))[0])
    assert root.find("os/loader").get("secure") == "yes" and root.find("features/smm").get("state") == "on"
    # A pin whose parts are not what they say is refused.
    bad = dict(firmware_pin(LIVE), loader="<nvram>/var/lib/libvirt/qemu/nvram/x</nvram>")
    with pytest.raises(ValidationError):
        pin_firmware(AUTO, bad)


def test_a_shut_off_vm_whose_firmware_made_a_store_is_refused_naming_it():
    got = parts.uncarried({"firmware_nvram_unknown": "/var/lib/libvirt/qemu/nvram/vm_VARS.fd"})
    assert len(got) == 1 and "/var/lib/libvirt/qemu/nvram/vm_VARS.fd" in got[0] and "while the VM runs" in got[0]


def test_a_domain_owns_the_store_libvirt_keeps_for_a_firmware_it_chooses():
    from ansible_collections.hypervisor.resize.plugins.module_utils.domain import (
        firmware_pin,
        own_files,
        pin_firmware,
    )
    assert own_files(AUTO) == {"/var/lib/libvirt/qemu/nvram/vm_VARS.fd"}
    assert own_files(pin_firmware(AUTO, firmware_pin(LIVE))[0]) == {"/var/lib/libvirt/qemu/nvram/vm_VARS.fd"}
    assert own_files(_xml()) == {"/var/lib/libvirt/images/vm.qcow2", "/var/lib/libvirt/qemu/nvram/vm_VARS.fd",
                                 "/var/lib/libvirt/swtpm/%s/tpm2/tpm2-00.permall" % UUID}
