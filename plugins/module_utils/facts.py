# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only facts of a hypervisor and of one domain on it. Private to hypervisor.resize."""

from __future__ import annotations

import os
import shutil

from . import _policy, storage
from . import record as record_mod
from . import state as state_mod
from .connection import Connection, get_record, hostname, inactive_xml, libvirt, state_of
from .domain import (
    check_domain_name,
    copy_disks,
    firmware_pin,
    model_from_xml,
    moved_files,
    parse_xml,
    pin_firmware,
    role_disk,
    root_disk,
)
from .errors import ResizeError
from .parts import STATE_FILE_DEVICES, TPM_IGNORED

RECORD_SUMMARY = ("id", "status", "source", "dest", "updated", "rolled_back", "batch")


def _version(n):
    return "%d.%d.%d" % (n // 1000000, (n // 1000) % 1000, n % 1000)


def _bridges():
    base = "/sys/class/net"
    try:
        return sorted(n for n in os.listdir(base) if os.path.isdir(os.path.join(base, n, "bridge")))
    except OSError:
        return []


POOL_TYPES = ("dir", "fs", "netfs")


def storage_roots(conn, instances_path):
    """Where this host keeps VM disks: the instances path and the targets of its active file-based
    libvirt pools (docs/security.md P1). Returns (roots, dropped)."""
    candidates = [instances_path]
    try:
        pools = conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
    except libvirt.libvirtError:
        pools = []
    for pool in pools:
        root = parse_xml(pool.XMLDesc(0), "storage pool XML")
        if root.get("type") in POOL_TYPES and root.findtext("./target/path"):
            candidates.append(root.findtext("./target/path").strip())
    return _policy.storage_roots(candidates)


def other_domains_paths(conn, vm_uuid):
    """The host paths every other domain defined here uses (docs/security.md P4)."""
    out = []
    for dom in conn.listAllDomains():
        if dom.UUIDString().lower() != str(vm_uuid).lower():
            out += _policy.domain_paths(parse_xml(inactive_xml(dom)))
    return out


def describe_instance(dom, state_dir=None):
    """Model, state, disks (with sizes) and record of one domain, and the operation holding it on
    this host now (busy), if any."""
    defined = inactive_xml(dom)
    rec = get_record(dom)
    pre = (rec or {}).get("precopy") or {}
    if record_mod.is_open(rec) and pre.get("original_xml") and not pre.get("undone"):
        # An open pre-copy's deltas are this tool's, not the VM's: the VM's definition is the one
        # before them (a resumed move renders it again; a revert defines it again).
        defined = pre["original_xml"]
    # A firmware libvirt chooses (<os firmware=...>) is known while the VM runs (or, once the move
    # powered it off, from this host's own record of it): written into the definition a move
    # renders, with its NVRAM store, which then travels (parts: "firmware").
    pin = firmware_pin(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE)) if dom.isActive() else \
        ((rec or {}).get("firmware_pin") if record_mod.is_open(rec) else None)
    xml, pinned = pin_firmware(defined, pin)
    model = model_from_xml(xml)
    disks = []
    for disk in model["disks"]:
        entry = dict(disk)
        if disk["path"] and not disk["network"] and disk["device"] in ("disk",) + STATE_FILE_DEVICES \
                and disk.get("type", "file") == "file" and os.path.exists(disk["path"]):
            entry.update(storage.image_info(disk["path"], disk["format"]))
        disks.append(entry)
    root = root_disk(disks)
    return {
        "name": model["name"],
        "uuid": model["uuid"],
        "state": state_of(dom),
        "vcpus": model["vcpus"],
        "memory_mb": model["memory_mb"],
        # What QEMU runs now (after a live revert it may run more than its definition says).
        "running_vcpus": dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE) if dom.isActive() else None,
        "disks": disks,
        "root_disk": root,
        "copy_disks": copy_disks(disks),
        "moved_files": moved_files(disks),
        "ephemeral_disk": role_disk(disks, "ephemeral"),
        "swap_disk": role_disk(disks, "swap"),
        "interfaces": model["interfaces"],
        "boot_files": model["boot_files"],
        "model": model,
        "xml": xml,
        "defined_xml": defined,
        "firmware_pin": pin if pinned else None,
        "firmware_nvram_unknown": _unknown_nvram(xml),
        "migration": rec,
        "autostart": bool(dom.autostart()),
        "snapshots": sorted(dom.snapshotListNames()),
        "checkpoints": _checkpoints(dom),
        "managed_save": bool(dom.hasManagedSaveImage()),
        "busy": state_mod.vm_busy(state_dir, model["uuid"]) if state_dir else None,
        "tpm_extra": _tpm_extra(disks),
    }


def _unknown_nvram(xml):
    """The UEFI variable store of a shut-off VM whose firmware libvirt chooses, if it has one: which
    firmware made it is known only while the VM runs (refused: parts.uncarried)."""
    path = _policy.default_nvram_of(parse_xml(xml))
    return path if path and os.path.lexists(path) else None


def _checkpoints(dom):
    """Names of the domain's libvirt checkpoints (incremental backup bitmaps' records)."""
    try:
        return sorted(cp.getName() for cp in dom.listAllCheckpoints())
    except (AttributeError, libvirt.libvirtError):
        return []


def _tpm_extra(disks):
    """Files beside the vTPM's state file (swtpm's saved or volatile state, ...): a move carries the
    state file only, so these are refused by name (parts.uncarried)."""
    out = []
    for d in disks:
        if d["device"] == "tpm":
            where = os.path.dirname(d["path"])
            try:
                names = sorted(os.listdir(where))
            except OSError:
                continue
            out += [os.path.join(where, n) for n in names
                    if n not in TPM_IGNORED and n != os.path.basename(d["path"])]
    return out


def gather(params):
    with Connection(params["uri"]) as c:
        conn = c.conn
        arch, memory_mb, cpus = conn.getInfo()[:3]
        caps = parse_xml(conn.getCapabilities(), "capabilities XML")
        domains = []
        alloc_vcpus = alloc_mem = 0
        for dom in conn.listAllDomains():
            model = model_from_xml(inactive_xml(dom))
            rec = get_record(dom)
            domains.append({
                "name": model["name"],
                "uuid": model["uuid"],
                "state": state_of(dom),
                "vcpus": model["vcpus"],
                "memory_mb": model["memory_mb"],
                "migration": {k: rec.get(k) for k in RECORD_SUMMARY} if rec else None,
            })
            alloc_vcpus += model["vcpus"]
            alloc_mem += model["memory_mb"]
        roots, dropped = storage_roots(conn, params["instances_path"])
        try:
            networks = sorted(n.name() for n in conn.listAllNetworks(libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE))
        except libvirt.libvirtError:
            networks = []
        hv = {
            "hostname": hostname(),
            "arch": arch,
            "cpu_model": caps.findtext("./host/cpu/model"),
            "cpus": cpus,
            "memory_mb": memory_mb,
            "free_memory_mb": conn.getFreeMemory() // (1024 * 1024),
            "libvirt_version": _version(conn.getLibVersion()),
            "hypervisor_version": _version(conn.getVersion()),
            "allocated_vcpus": alloc_vcpus,
            "allocated_memory_mb": alloc_mem,
            "instances_path": params["instances_path"],
            "free_disk_bytes": storage.free_bytes(params["instances_path"]),
            "storage_roots": roots,
            "storage_roots_refused": dropped,
            "bridges": _bridges(),
            # libvirt runs swtpm for a VM's emulated TPM: without it such a VM cannot start here.
            "swtpm": shutil.which("swtpm") is not None,
            "networks": networks,
            "domains": sorted(domains, key=lambda d: d["name"]),
        }
        hv.update(state_mod.claimed_totals(params["state_dir"]))
        # In maintenance (a drain put it there): the scheduler does not place VMs here.
        hv["maintenance"] = state_mod.read_maintenance(params["state_dir"])
        # Open migrations this host prepared (claims), also those without a domain here yet: what
        # recover.yml cleans up after a destination that failed or a run that was killed.
        hv["migrations"] = [{k: rec.get(k) for k in ("id", "instance", "uuid", "status", "source", "dest")}
                            for rec in state_mod.records(params["state_dir"])]
        result = {"changed": False, "hypervisor": hv}
        if params.get("instance"):
            name = check_domain_name(params["instance"])
            result["instance"] = _describe(c, name, params["state_dir"])
        names = [check_domain_name(n) for n in params.get("instances") or []]
        if params.get("all_instances"):
            names += [d["name"] for d in domains]
        if names or params.get("all_instances"):
            result["instances"] = {}
            for n in sorted(set(names)):
                try:
                    inst = _describe(c, n, params["state_dir"])
                except ResizeError as exc:
                    # One domain this host cannot describe does not hide the others: the batch
                    # refuses that VM, naming this.
                    inst = {"name": n, "error": exc.full_message()}
                if inst is not None:
                    result["instances"][n] = inst
        return result


def _describe(c, name, state_dir):
    dom = c.find(name)
    try:
        return describe_instance(dom, state_dir) if dom is not None else None
    except ResizeError as exc:
        exc.domain, exc.host = name, hostname()
        raise
