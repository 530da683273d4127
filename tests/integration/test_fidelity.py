"""Every real VM moves whole, or is refused before anything changes (issue #10), on the real bed:
UEFI NVRAM and vTPM state byte for byte, CPU topology and pins element by element, autostart, and
refusals for what a move cannot carry yet (snapshots, managed save, encrypted TPM state, block and
pool disks)."""

import xml.etree.ElementTree as ET

from resize_lib import (
    HOSTS,
    dominfo,
    exists,
    migrations_dir,
    nothing_left_on,
    playbook,
    record,
    report,
    said,
    sh,
    sha256,
    transfer_keys,
    where,
)

NVRAM = "/var/lib/libvirt/qemu/nvram/%s_VARS.fd"


def redefine(bed, vm, edit, host="hv1"):
    """Change the (shut-off) guest's definition with edit(root) and define it again."""
    root = ET.fromstring(sh(bed, host, "virsh -c qemu:///system dumpxml --inactive %s" % vm))
    edit(root)
    xml = ET.tostring(root, encoding="unicode")
    bed.ssh(host, "cat > /tmp/%s.xml <<'HVR_EOF'\n%s\nHVR_EOF\nvirsh -q -c qemu:///system define /tmp/%s.xml && "
                  "rm -f /tmp/%s.xml" % (vm, xml, vm, vm))


def cpu_of(root):
    """The domain's <cpu>, made (the bed's qemu64 model) if it has none."""
    cpu = root.find("cpu")
    if cpu is None:
        cpu = ET.SubElement(root, "cpu", mode="custom", match="exact")
        ET.SubElement(cpu, "model", fallback="allow").text = "qemu64"
    return cpu


def dumpxml(bed, host, vm):
    return ET.fromstring(sh(bed, host, "virsh -c qemu:///system dumpxml --inactive %s" % vm))


def untouched(bed, vm, power="shut off"):
    assert where(bed, vm) == {"hv1": power}
    assert record(bed, "hv1", vm) is None
    for h in HOSTS:
        assert migrations_dir(bed, h) == set() and transfer_keys(bed, h) == 0


def test_uefi_nvram_travels_byte_for_byte_and_is_kept_until_confirm(bed, guest):
    vm = guest("it-uefi", start=False, vcpus=1, memory_mb=128, disk_gb=1)

    def uefi(root):
        os_el = root.find("os")
        loader = ET.SubElement(os_el, "loader", readonly="yes", type="pflash")
        loader.text = "/usr/share/OVMF/OVMF_CODE_4M.fd"
        ET.SubElement(os_el, "nvram").text = NVRAM % vm
    redefine(bed, vm, uefi)
    # The variable store as a VM leaves it: the template plus what it wrote (boot entries, keys).
    sh(bed, "hv1", "mkdir -p /var/lib/libvirt/qemu/nvram && cp /usr/share/OVMF/OVMF_VARS_4M.fd %s && "
                   "dd if=/dev/urandom of=%s bs=4k seek=4 count=8 conv=notrunc status=none" % (NVRAM % vm, NVRAM % vm))
    before = sha256(bed, "hv1", NVRAM % vm)

    # Check mode on a destination that never ran a UEFI VM (no NVRAM directory yet): the plan, and
    # nothing made there.
    sh(bed, "hv2", "rmdir /var/lib/libvirt/qemu/nvram 2>/dev/null || true")
    proc = playbook(bed, "resize.yml", "--check", check=True, instance=vm, flavor="m1.small", target_host="hv2")
    assert "carries: 1 disk(s), UEFI NVRAM" in said(proc)
    assert not exists(bed, "hv2", "/var/lib/libvirt/qemu/nvram") and where(bed, vm) == {"hv1": "shut off"}

    playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small", target_host="hv2")
    assert sha256(bed, "hv2", NVRAM % vm) == before, "the NVRAM store arrived byte for byte"
    assert sha256(bed, "hv1", NVRAM % vm) == before, "and the source keeps its own until confirm"
    assert dumpxml(bed, "hv2", vm).findtext("os/nvram") == NVRAM % vm
    assert any(d["path"] == NVRAM % vm for d in record(bed, "hv1", vm)["disks"])

    playbook(bed, "revert.yml", check=True, instance=vm)
    assert not exists(bed, "hv2", NVRAM % vm), "revert removes the destination's copy"
    assert sha256(bed, "hv1", NVRAM % vm) == before
    nothing_left_on(bed, "hv2", vm)

    playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small", target_host="hv3")
    playbook(bed, "confirm.yml", check=True, instance=vm)
    assert sha256(bed, "hv3", NVRAM % vm) == before
    assert not exists(bed, "hv1", NVRAM % vm), "confirm deletes the source's store, after the copy was verified"
    sh(bed, "hv3", "rm -f %s" % (NVRAM % vm))


def test_a_firmware_libvirt_chose_is_pinned_and_its_store_travels(bed, guest):
    vm = guest("it-fwauto", start=False, vcpus=1, memory_mb=128, disk_gb=1)
    redefine(bed, vm, lambda root: root.find("os").set("firmware", "efi"))
    # Never started: no store yet, nothing to carry; a store planted on the destination under the
    # name libvirt would give it is never taken for the VM's (P4).
    sh(bed, "hv2", "mkdir -p /var/lib/libvirt/qemu/nvram && echo planted > %s" % (NVRAM % vm))
    proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small", target_host="hv2")
    assert proc.returncode != 0 and "[rule P4," in said(proc) and NVRAM % vm in said(proc)
    untouched(bed, vm)
    sh(bed, "hv2", "rm -f %s" % (NVRAM % vm))
    # Started once (libvirt chooses OVMF and makes the store), then shut off: which firmware made the
    # store is known only while the VM runs, so the move is refused, naming the store.
    sh(bed, "hv1", "virsh -q -c qemu:///system start %s && virsh -q -c qemu:///system destroy %s" % (vm, vm))
    proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small", target_host="hv2")
    assert proc.returncode != 0 and "a UEFI variable store %s" % (NVRAM % vm) in said(proc)
    untouched(bed, vm)
    # Running: the loader and store libvirt chose are written into the new definition, the store
    # travels byte for byte (as of the power-off), and the source keeps its own definition as it was.
    # (OVMF does not boot the tiny guest under TCG here: the domain runs, the guest never gets READY.)
    sh(bed, "hv1", "virsh -q -c qemu:///system start %s" % vm)
    live = ET.fromstring(sh(bed, "hv1", "virsh -c qemu:///system dumpxml %s" % vm))
    loader = live.findtext("os/loader").strip()
    proc = playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small", target_host="hv2",
                    resize_shutdown_timeout=2, resize_shutdown_retry_interval=1)
    assert "is pinned in the new definition" in said(proc) and "carries: 1 disk(s), UEFI NVRAM" in said(proc)
    os_el = dumpxml(bed, "hv2", vm).find("os")
    assert os_el.get("firmware") is None and os_el.findtext("loader").strip() == loader
    assert os_el.findtext("nvram").strip() == NVRAM % vm
    assert sha256(bed, "hv2", NVRAM % vm) == sha256(bed, "hv1", NVRAM % vm)
    assert dumpxml(bed, "hv1", vm).find("os").get("firmware") == "efi"
    playbook(bed, "revert.yml", check=True, instance=vm)
    assert dumpxml(bed, "hv1", vm).find("os").get("firmware") == "efi" and not exists(bed, "hv2", NVRAM % vm)
    # On the same host: the store is backed up beside itself and put back by revert, with the
    # definition as it was.
    playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small", target_host="hv1",
             allow_same_host="true", resize_shutdown_timeout=2, resize_shutdown_retry_interval=1)
    before = sha256(bed, "hv1", NVRAM % vm + ".hvresize-backup")  # the store as of the power-off
    sh(bed, "hv1", "dd if=/dev/urandom of=%s bs=4k seek=4 count=2 conv=notrunc status=none" % (NVRAM % vm))
    playbook(bed, "revert.yml", check=True, instance=vm)
    assert sha256(bed, "hv1", NVRAM % vm) == before and not exists(bed, "hv1", NVRAM % vm + ".hvresize-backup")
    assert dumpxml(bed, "hv1", vm).find("os").get("firmware") == "efi"
    sh(bed, "hv1", "virsh -q -c qemu:///system destroy %s" % vm)


TPM = "/var/lib/libvirt/swtpm/%s"
TPM2_STATE = TPM + "/tpm2/tpm2-00.permall"


def differing_bytes(bed, host_a, host_b, path):
    """How many bytes of `path` differ between two hosts (a TPM's state changes by a few bytes at each
    start; a new TPM made by libvirt, with new seeds and keys, in thousands)."""
    a, b = (sh(bed, h, "od -An -v -tx1 %s" % path).split() for h in (host_a, host_b))
    return sum(1 for x, y in zip(a, b) if x != y) + abs(len(a) - len(b))


def tpm_guest(bed, guest, name, model="tpm-crb", start_once=True):
    """A shut-off guest with an emulated TPM 2.0; started once (the first start makes the TPM:
    swtpm_setup, seeds, EK) unless start_once is false. Returns (name, uuid)."""
    vm = guest(name, start=False, vcpus=1, memory_mb=128, disk_gb=1)
    redefine(bed, vm, lambda root: root.find("devices").append(ET.fromstring(
        "<tpm model='%s'><backend type='emulator' version='2.0'/></tpm>" % model)))
    uuid = sh(bed, "hv1", "virsh -q -c qemu:///system domuuid %s" % vm).strip()
    if start_once:
        sh(bed, "hv1", "virsh -q -c qemu:///system start %s && virsh -q -c qemu:///system destroy %s" % (vm, vm))
    return vm, uuid


def test_vtpm_state_travels_byte_for_byte_and_is_kept_until_confirm(bed, guest):
    vm, uuid = tpm_guest(bed, guest, "it-tpm")
    before = sha256(bed, "hv1", TPM2_STATE % uuid)

    proc = playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small", target_host="hv2")
    assert "carries: 1 disk(s), TPM state" in said(proc)
    assert sha256(bed, "hv2", TPM2_STATE % uuid) == before, "the TPM's state arrived byte for byte"
    assert sha256(bed, "hv1", TPM2_STATE % uuid) == before, "and the source keeps its own until confirm"
    assert any(d["path"] == TPM2_STATE % uuid for d in record(bed, "hv1", vm)["disks"])

    playbook(bed, "revert.yml", check=True, instance=vm)
    assert not exists(bed, "hv2", TPM % uuid), "revert removes the destination's copy and the directory prep made"
    assert sha256(bed, "hv1", TPM2_STATE % uuid) == before
    nothing_left_on(bed, "hv2", vm)

    # Running: shut down, moved, started on hv3 with the same TPM (seeds and keys), not a new one.
    sh(bed, "hv1", "virsh -q -c qemu:///system start %s" % vm)
    playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small", target_host="hv3")
    assert where(bed, vm) == {"hv1": "shut off", "hv3": "running"}
    assert differing_bytes(bed, "hv1", "hv3", TPM2_STATE % uuid) < 64
    playbook(bed, "confirm.yml", check=True, instance=vm)
    assert not exists(bed, "hv1", TPM % uuid), "confirm deletes the source's TPM, after the copy was verified"
    assert exists(bed, "hv3", TPM2_STATE % uuid)


def test_a_tpm_never_started_travels_as_none_and_revert_leaves_none_behind(bed, guest):
    vm, uuid = tpm_guest(bed, guest, "it-tpmnew", start_once=False)
    proc = playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small", target_host="hv2")
    assert "carries: 1 disk(s)" in said(proc) and "TPM state" not in said(proc)
    assert not exists(bed, "hv2", TPM % uuid)
    # Started on the destination to try it: libvirt makes its TPM there; revert takes it away again.
    sh(bed, "hv2", "virsh -q -c qemu:///system start %s" % vm)
    assert exists(bed, "hv2", TPM2_STATE % uuid)
    playbook(bed, "revert.yml", check=True, instance=vm)
    assert not exists(bed, "hv2", TPM % uuid) and not exists(bed, "hv1", TPM % uuid)
    nothing_left_on(bed, "hv2", vm)
    playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small", target_host="hv2")
    playbook(bed, "confirm.yml", check=True, instance=vm)
    assert where(bed, vm) == {"hv2": "shut off"}


def test_a_tpm_whose_state_cannot_travel_whole_is_refused_naming_it(bed, guest):
    vm, uuid = tpm_guest(bed, guest, "it-tpmx", model="tpm-tis")
    # swtpm's saved state beside the permanent one: a move carries the state file only.
    extra = TPM % uuid + "/tpm2/tpm2-00.savestate"
    sh(bed, "hv1", "echo saved > %s" % extra)
    before = sha256(bed, "hv1", TPM2_STATE % uuid)
    proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small", target_host="hv2")
    assert proc.returncode != 0 and "vTPM files beside its state file (%s)" % extra in said(proc)
    untouched(bed, vm)
    assert sha256(bed, "hv1", TPM2_STATE % uuid) == before and not exists(bed, "hv2", TPM % uuid)
    sh(bed, "hv1", "rm -f %s" % extra)
    # TPM state the destination holds already for this UUID is never taken for the VM's (P4).
    sh(bed, "hv2", "mkdir -p %s/tpm2 && echo planted > %s" % (TPM % uuid, TPM2_STATE % uuid))
    proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small", target_host="hv2")
    assert proc.returncode != 0 and "[rule P4," in said(proc) and TPM % uuid in said(proc)
    untouched(bed, vm)
    assert sh(bed, "hv2", "cat %s" % (TPM2_STATE % uuid)).strip() == "planted"
    sh(bed, "hv2", "rm -rf %s" % (TPM % uuid))
    # On the same host the state stays where it is, with a backup beside it that revert puts back.
    playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small", target_host="hv1",
             allow_same_host="true")
    assert exists(bed, "hv1", TPM2_STATE % uuid + ".hvresize-backup")
    sh(bed, "hv1", "virsh -q -c qemu:///system start %s" % vm)  # the guest's TPM writes its state
    playbook(bed, "revert.yml", check=True, instance=vm)
    assert sha256(bed, "hv1", TPM2_STATE % uuid) == before
    assert not exists(bed, "hv1", TPM2_STATE % uuid + ".hvresize-backup")
    assert dominfo(bed, "hv1", vm)["vcpus"] == 1


def test_cpu_topology_keeps_its_sockets_and_pins_follow_the_new_count(bed, guest):
    vm = guest("it-cpu", start=False, vcpus=1, memory_mb=128, disk_gb=1)

    def layout(root):
        vcpu = root.find("vcpu")
        vcpu.set("cpuset", "0")
        cpu = cpu_of(root)
        ET.SubElement(cpu, "topology", sockets="1", dies="1", cores="1", threads="1")
        tune = ET.SubElement(root, "cputune")
        ET.SubElement(tune, "vcpupin", vcpu="0", cpuset="0")
    redefine(bed, vm, layout)
    sh(bed, "hv1", "virsh -q -c qemu:///system start %s" % vm)
    proc = playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small", target_host="hv2")
    assert "cores 1 -> 2 (sockets 1, dies 1, threads 1 kept)" in said(proc), "the change is a plan warning"
    root = dumpxml(bed, "hv2", vm)
    assert root.find("cpu/topology").attrib == {"sockets": "1", "dies": "1", "cores": "2", "threads": "1"}
    assert root.find("vcpu").get("cpuset") == "0" and root.findtext("vcpu") == "2"
    assert [(p.get("vcpu"), p.get("cpuset")) for p in root.findall("cputune/vcpupin")] == [("0", "0")]
    assert report(bed, vm, "hv2")["nproc"] == "2"
    # The new vCPU follows the domain's cpuset (CPU 0), as libvirt reports for the running guest.
    pins = sh(bed, "hv2", "virsh -q -c qemu:///system vcpupin %s" % vm)
    assert [line.split() for line in pins.strip().splitlines()] == [["0", "0"], ["1", "0"]]
    playbook(bed, "confirm.yml", check=True, instance=vm)


def test_a_topology_the_new_count_does_not_fit_is_refused_up_front(bed, guest):
    vm = guest("it-cpu2", start=False, vcpus=2, memory_mb=128, disk_gb=1)

    def two_sockets(root):
        cpu = cpu_of(root)
        ET.SubElement(cpu, "topology", sockets="2", dies="1", cores="1", threads="1")
    redefine(bed, vm, two_sockets)
    proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.medium", target_host="hv2")  # 3 vCPUs
    assert proc.returncode != 0
    assert "3 vCPUs do not fit the VM's CPU topology (2 sockets" in said(proc)
    assert "resize_cpu_topology=flatten" in said(proc)
    untouched(bed, vm)
    playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.medium", target_host="hv2",
             resize_cpu_topology="flatten")
    assert dumpxml(bed, "hv2", vm).find("cpu/topology") is None
    assert dominfo(bed, "hv2", vm)["vcpus"] == 3


def test_autostart_travels_and_the_source_keeps_quiet_until_revert(bed, guest):
    vm = guest("it-autostart", vcpus=1, memory_mb=128, disk_gb=1)
    sh(bed, "hv1", "virsh -q -c qemu:///system autostart %s" % vm)

    def autostart(host):
        return "Autostart:      enable" in sh(bed, host, "virsh -c qemu:///system dominfo %s" % vm)
    playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small", target_host="hv2")
    assert autostart("hv2"), "the resized VM starts with its new host"
    assert not autostart("hv1"), "a reboot of the source must not start the original too"
    playbook(bed, "revert.yml", check=True, instance=vm)
    assert autostart("hv1") and where(bed, vm) == {"hv1": "running"}


def test_what_a_move_cannot_carry_is_refused_up_front_naming_it(bed, guest):
    # A libvirt snapshot (internal, in the qcow2): its record would be lost.
    vm = guest("it-snap", start=False, vcpus=1, memory_mb=128, disk_gb=1)
    sh(bed, "hv1", "virsh -q -c qemu:///system snapshot-create-as %s before-upgrade" % vm)
    proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small", target_host="hv2")
    assert proc.returncode != 0 and "libvirt snapshot(s) before-upgrade" in said(proc)
    untouched(bed, vm)
    # An emulated TPM whose state is encrypted with a secret of the source host.
    vm = guest("it-tpmenc", start=False, vcpus=1, memory_mb=128, disk_gb=1)
    redefine(bed, vm, lambda root: root.find("devices").append(ET.fromstring(
        "<tpm model='tpm-crb'><backend type='emulator' version='2.0'>"
        "<encryption secret='6dd3e4a5-1d76-44ce-961f-f119f5aad935'/></backend></tpm>")))
    proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small", target_host="hv2")
    assert proc.returncode != 0 and "emulated TPM: its state is encrypted with libvirt secret" in said(proc)
    assert "[rule P3," in said(proc)
    untouched(bed, vm)
    # A disk in a storage pool, and a block device only the source has.
    vm = guest("it-vol", start=False, vcpus=1, memory_mb=128, disk_gb=1)
    redefine(bed, vm, lambda root: root.find("devices").append(ET.fromstring(
        "<disk type='volume' device='disk'><driver name='qemu' type='raw'/>"
        "<source pool='shared' volume='it-vol-data.raw'/><target dev='vdb' bus='virtio'/></disk>")))
    proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small", target_host="hv2")
    assert proc.returncode != 0 and "volume='it-vol-data.raw'" in said(proc)
    untouched(bed, vm)
    vm = guest("it-blk", start=False, vcpus=1, memory_mb=128, disk_gb=1)
    redefine(bed, vm, lambda root: root.find("devices").append(ET.fromstring(
        "<disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='/dev/hvr-vg/it-blk'/>"
        "<target dev='vdb' bus='virtio'/></disk>")))
    proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small", target_host="hv2")
    assert proc.returncode != 0 and "/dev/hvr-vg/it-blk is a host block device" in said(proc)
    untouched(bed, vm)
    proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small", target_host="hv2",
                    resize_allow_host_access=["host_block_device"])
    assert proc.returncode != 0 and "is not a block device on the destination" in said(proc)
    untouched(bed, vm)


def test_a_managed_save_image_is_refused_up_front(bed, guest):
    vm = guest("it-msave", vcpus=1, memory_mb=128, disk_gb=1)
    sh(bed, "hv1", "virsh -q -c qemu:///system managedsave %s" % vm)
    proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small", target_host="hv2")
    assert proc.returncode != 0 and "a managed-save image" in said(proc)
    untouched(bed, vm)
    sh(bed, "hv1", "virsh -q -c qemu:///system managedsave-remove %s" % vm)


def test_numa_cells_are_split_evenly_or_the_resize_is_refused(bed, guest):
    vm = guest("it-numa", start=False, vcpus=2, memory_mb=128, disk_gb=1)

    def two_cells(root):
        cpu = cpu_of(root)
        numa = ET.SubElement(cpu, "numa")
        for i in range(2):
            ET.SubElement(numa, "cell", id=str(i), cpus=str(i), memory=str(64 * 1024), unit="KiB")
    redefine(bed, vm, two_cells)
    proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.medium", target_host="hv2")  # 3 vCPUs
    assert proc.returncode != 0 and "do not split evenly over the VM's 2 NUMA cells" in said(proc)
    untouched(bed, vm)
    sh(bed, "hv1", "virsh -q -c qemu:///system start %s" % vm)
    proc = playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small", target_host="hv2")
    assert "2 cells of 1 vCPUs and 128 MiB each" in said(proc)
    cells = dumpxml(bed, "hv2", vm).findall("cpu/numa/cell")
    assert [(c.get("cpus"), int(c.get("memory")), c.get("unit")) for c in cells] == \
        [("0", 128 * 1024, "KiB"), ("1", 128 * 1024, "KiB")]
    assert report(bed, vm, "hv2")["nproc"] == "2"
    playbook(bed, "confirm.yml", check=True, instance=vm)


def test_checkpoints_are_refused_up_front_naming_them(bed, guest):
    vm = guest("it-ckpt", vcpus=1, memory_mb=128, disk_gb=1)  # libvirt 9.0 checkpoints running domains only
    sh(bed, "hv1", "virsh -q -c qemu:///system checkpoint-create-as %s nightly" % vm)
    proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small", target_host="hv2")
    assert proc.returncode != 0 and "libvirt checkpoint(s) nightly" in said(proc)
    untouched(bed, vm, power="running")
    sh(bed, "hv1", "virsh -q -c qemu:///system checkpoint-delete %s nightly" % vm)


def test_the_size_is_what_runs_and_the_hot_plug_ceiling_is_kept_or_dropped_on_request(bed, guest):
    vm = guest("it-vcur", start=False, vcpus=2, memory_mb=128, disk_gb=1)
    redefine(bed, vm, lambda root: root.find("vcpu").set("current", "1"))
    sh(bed, "hv1", "virsh -q -c qemu:///system start %s" % vm)
    assert report(bed, vm, "hv1")["nproc"] == "1"
    proc = playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small", target_host="hv2",
                    resize_max_vcpus=0, resize_max_memory_mb=0)
    assert "before: 1 vCPU, 128 MiB" in said(proc), "the size is <vcpu current>, not the ceiling"
    vcpu = dumpxml(bed, "hv2", vm).find("vcpu")
    assert vcpu.get("current") is None and vcpu.text == "2", "resize_max_vcpus=0: no ceiling"
    assert report(bed, vm, "hv2")["nproc"] == "2"
    playbook(bed, "revert.yml", check=True, instance=vm)
    assert dumpxml(bed, "hv1", vm).find("vcpu").get("current") == "1", "revert gives back the definition as it was"


def test_a_network_disk_is_never_copied_and_needs_the_opt_in(bed, guest):
    vm = guest("it-netdisk", start=False, vcpus=1, memory_mb=128, disk_gb=1)
    redefine(bed, vm, lambda root: root.find("devices").append(ET.fromstring(
        "<disk type='network' device='disk'><driver name='qemu' type='raw'/>"
        "<source protocol='nbd' name='data'><host name='198.51.100.1' port='10809'/></source>"
        "<target dev='vdb' bus='virtio'/></disk>")))
    proc = playbook(bed, "resize.yml", instance=vm, flavor="m1.small", target_host="hv2")
    assert proc.returncode != 0 and "[rule D9," in said(proc) and "host_network" in said(proc)
    untouched(bed, vm)
    proc = playbook(bed, "resize.yml", check=True, instance=vm, flavor="m1.small", target_host="hv2",
                    resize_allow_host_access=["host_network"])
    assert "carries: 1 disk(s)" in said(proc)
    disks = dumpxml(bed, "hv2", vm).findall("devices/disk")
    assert [(d.get("type"), d.find("source").get("protocol")) for d in disks][1] == ("network", "nbd")
    playbook(bed, "confirm.yml", check=True, instance=vm)
