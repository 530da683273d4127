# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a resize carries, changes or refuses of a VM: one table. Private to hypervisor.resize. No I/O.

PARTS is the table docs/architecture.md prints ("What a move carries, changes or refuses"; a unit
test keeps them equal). state_files() (devices STATE_FILE_DEVICES in a model's disk list) is what
every step reads to know which files are the VM's state besides its disks: facts report them, the
controller plans their bytes, prep lets the receiver write exactly them (and makes the directories
they need, named in its record first), the copy sends and verifies them, finish leaves them out of
any resizing, confirm deletes the source's copies and revert the destination's. A new kind of state
file is one entry here.
"""

from __future__ import annotations

import re
from collections import namedtuple

from .errors import ValidationError

Part = namedtuple("Part", "key part move where")

PARTS = (
    Part("disk", "disk files (raw, qcow2)",
         "copied sparse, verified by sha256 (a running VM's while it runs, then its deltas: pre-copy); the source's "
         "kept until confirm; root/ephemeral grown, swap recreated",
         "`copy_disks`, `precopy`, `_transfer`, finish"),
    Part("nvram", "UEFI NVRAM (`<os><nvram>`)",
         "copied and verified like a disk, kept on the source until confirm, removed from the destination by "
         "revert; the `<loader>` must exist there (P2)", "`parts.state_files`"),
    Part("firmware", "firmware chosen by libvirt (`<os firmware=...>` without `<nvram>`)",
         "pinned: a running VM's `<loader>`, `<nvram>` and SMM (as libvirt chose them on the source, kept in "
         "the source's record for a resumed move) written into the new definition, with a warning, and its NVRAM "
         "store carried; a shut-off VM that has a store "
         "(`/var/lib/libvirt/qemu/nvram/<name>_VARS.fd`) refused (which firmware made it is known only while it "
         "runs), one that never ran kept as it is (the destination must not hold a store by that name: P4)",
         "`pin_firmware`, `parts.uncarried`, `check_domain_here`"),
    Part("tpm", "emulated TPM state (swtpm, `<tpm><backend type='emulator'>`)",
         "its state file (`/var/lib/libvirt/swtpm/<uuid>/tpm2/tpm2-00.permall`, `tpm1.2/tpm-00.permall`) copied "
         "and verified like a disk into a directory prep makes (never one that exists), kept on the source until "
         "confirm, removed with that directory by revert; none yet (never started) = none carried, libvirt makes "
         "it at the first start; encrypted state (`<encryption secret>`), a state path of its own (`<source>`), "
         "other files beside it refused (P3)", "`parts.state_files`, prep, settle"),
    Part("topology", "`<cpu><topology>`",
         "sockets, dies, threads kept, cores scaled; refused when it does not divide, or dropped with "
         "`resize_cpu_topology=flatten`", "`resized_model`"),
    Part("pinning", "`<vcpu cpuset>`, `<cputune><vcpupin>`",
         "cpuset kept (new vCPUs follow it); pins of vCPUs that go removed; other per-vCPU tuning naming gone "
         "vCPUs refused", "`resized_model`"),
    Part("numa", "NUMA cells", "split evenly, or refused", "`resized_model`"),
    Part("hotplug", "`<vcpu current>`, `<currentMemory>`; `<vcpu>`, `<memory>` above them",
         "the VM's size is `current` and `<currentMemory>`; the maxima are hot-plug ceilings, written anew for the "
         "destination (`resize_max_vcpus`, `resize_max_memory_mb`; none with a topology or NUMA cells)",
         "`model_from_xml`, `live.ceilings`"),
    Part("hotplug-extra", "`<vcpus>`, `<maxMemory>` (memory hot-plug slots)",
         "dropped, with a warning (`<vcpus>` only when it enables other vCPUs than the first `current`)",
         "`model_from_xml`"),
    Part("autostart", "autostart",
         "carried; off on the source from the power-off on, back on after a revert", "migrate, finish, settle"),
    Part("snapshots", "libvirt snapshots", "refused, named (their records are not carried yet)",
         "`parts.uncarried`, migrate"),
    Part("managed-save", "managed-save image", "refused", "`parts.uncarried`, migrate"),
    Part("checkpoints", "libvirt checkpoints (incremental backup)",
         "refused, named (their records are not carried; the bitmaps in a qcow2 would be orphans)",
         "`parts.uncarried`, migrate"),
    Part("block", "block device disks",
         "never copied, never backed up as a file: refused (D4), or with `host_block_device` kept as a device "
         "the destination must have", "`copy_disks`, `_policy`"),
    Part("volume", "pool volume disks", "refused (P3)", "`_policy`"),
    Part("network", "network disks", "not copied; refused unless `host_network` (D9)", "`_policy`"),
    Part("rest", "everything else (devices, MACs, addresses, metadata)",
         "kept verbatim, after the review of docs/security.md", "template"),
)

PART_KEYS = tuple(p.key for p in PARTS)

# The VM's state files other than its disks, by the device name they carry in a model's disk list.
STATE_FILE_DEVICES = ("nvram", "tpm")

SWTPM_ROOT = "/var/lib/libvirt/swtpm"
# libvirt's layout (qemu_tpm.c): <root>/<uuid>/<dir>/<swtpm's state file>, per TPM version.
TPM_STATE = {"2.0": ("tpm2", "tpm2-00.permall"), "1.2": ("tpm1.2", "tpm-00.permall")}
# What else swtpm keeps beside the state of a VM that is shut off: its lock file only.
TPM_IGNORED = (".lock",)
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def markdown_table():
    """PARTS as docs/architecture.md prints it."""
    lines = ["| part of the VM | a move to another host | where |", "|---|---|---|"]
    lines += ["| %s | %s | %s |" % (p.part, p.move, p.where) for p in PARTS]
    return "\n".join(lines)


def check_uuid(value):
    """The canonical form libvirt writes (lower-case, dashed): a path component, never more."""
    if not isinstance(value, str) or not UUID_RE.fullmatch(value):
        raise ValidationError("%r is not a domain UUID in libvirt's form" % (value,))
    return value


def tpm_state_dir(uuid):
    """The directory libvirt keeps all of a VM's vTPM state in (removed as a whole with it)."""
    return "%s/%s" % (SWTPM_ROOT, check_uuid(uuid))


def tpm_state_path(uuid, version):
    """Where libvirt keeps a VM's vTPM state for `version` ("2.0" or "1.2")."""
    if version not in TPM_STATE:
        raise ValidationError("<tpm><backend version=%r>: this version knows the TPM versions %s"
                              % (version, ", ".join(sorted(TPM_STATE))))
    sub, name = TPM_STATE[version]
    return "%s/%s/%s" % (tpm_state_dir(uuid), sub, name)


def _entry(device, path, optional=False):
    return {"device": device, "type": "file", "target": None, "bus": None, "path": path, "network": None,
            "format": "raw", "readonly": False, "role": None, "optional": optional}


def state_files(root):
    """The VM's state files that are not disks, as entries of the model's disk list: the UEFI NVRAM
    store (its path in the definition) and the emulated TPM's state (its path made from the UUID,
    never taken from a host: optional, as a VM never started has none yet)."""
    out = []
    nvram = (root.findtext("./os/nvram") or "").strip()
    if nvram:
        out.append(_entry("nvram", nvram))
    for tpm in root.findall("./devices/tpm"):
        backend = tpm.find("backend")
        if backend is not None and backend.get("type") == "emulator":
            try:
                path = tpm_state_path((root.findtext("uuid") or "").strip(), backend.get("version"))
            except ValidationError:
                continue  # refused by the review (_policy, P3) with the reason
            out.append(_entry("tpm", path, optional=True))
    return out


def emulated_tpm(root):
    """Whether the domain (parsed) has a TPM that libvirt runs swtpm for."""
    return root.find("./devices/tpm/backend[@type='emulator']") is not None


def tpm_problems(backend, uuid):
    """Why an emulated TPM's state cannot travel whole (P3), or []."""
    out = []
    if backend.find("encryption") is not None:
        out.append("its state is encrypted with libvirt secret %s of the source host, which the destination "
                   "does not have" % backend.find("encryption").get("secret"))
    if backend.find("source") is not None:
        out.append("its state is kept at a path of its own (<backend><source>), which this version does not carry")
    if backend.get("version") not in TPM_STATE:
        out.append("its version %r is not one of %s" % (backend.get("version"), ", ".join(sorted(TPM_STATE))))
    if uuid is not None and not UUID_RE.fullmatch(uuid or ""):
        out.append("the domain's UUID %r is not in libvirt's form" % (uuid,))
    return out


def made_dirs(entry, uuid):
    """The directories the destination makes for a state file before it is received, outermost
    first (each must not exist: P4), or [] for files whose directory must exist already."""
    if entry.get("device") == "tpm":
        top = tpm_state_dir(uuid)
        return [top, entry["path"].rsplit("/", 1)[0]]
    return []


def may_make(uuid):
    """Every directory the destination may ever make for a VM of this UUID (what revert may remove
    of what prep's record names)."""
    out = set()
    for version in TPM_STATE:
        out.update(made_dirs({"device": "tpm", "path": tpm_state_path(uuid, version)}, uuid))
    return out


def uncarried(instance):
    """What of the VM's state a move to another host cannot carry yet: refused up front, named
    (rows "snapshots" and "managed-save")."""
    out = []
    if instance.get("snapshots"):
        out.append("libvirt snapshot(s) %s: their records cannot be carried to another host yet; delete them "
                   "(virsh snapshot-delete) or resize on the same host" % ", ".join(instance["snapshots"]))
    if instance.get("managed_save"):
        out.append("a managed-save image: start the VM (it resumes from it) or discard it (virsh "
                   "managedsave-remove) first")
    if instance.get("firmware_nvram_unknown"):
        out.append("a UEFI variable store %s made by the firmware libvirt chooses for it (<os firmware>), which "
                   "is known only while the VM runs: resize it while it runs, or name its <loader> and <nvram> "
                   "in its definition" % instance["firmware_nvram_unknown"])
    if instance.get("checkpoints"):
        out.append("libvirt checkpoint(s) %s: their records cannot be carried to another host; delete them "
                   "(virsh checkpoint-delete --metadata, or with their bitmaps) or resize on the same host"
                   % ", ".join(instance["checkpoints"]))
    if instance.get("tpm_extra"):
        out.append("vTPM files beside its state file (%s): a move carries the state file only; start and shut "
                   "down the VM to let swtpm fold them in, or remove them if they are stale"
                   % ", ".join(instance["tpm_extra"]))
    return out


def carried(instance):
    """The rows of PARTS this VM has that travel with it, for the plan: e.g. ["2 disk(s)", "UEFI
    NVRAM", "TPM state"]."""
    files = instance.get("moved_files") or []
    out = []
    n = sum(1 for d in files if d.get("device") == "disk")
    if n:
        out.append("%d disk(s)" % n)
    if any(d.get("device") == "nvram" for d in files):
        out.append("UEFI NVRAM")
    if any(d.get("device") == "tpm" for d in files):
        out.append("TPM state")
    if instance.get("autostart"):
        out.append("autostart")
    return out
