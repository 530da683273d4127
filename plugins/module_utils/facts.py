# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only facts of a hypervisor and of one domain on it. Private to hypervisor.resize."""

from __future__ import annotations

import os

try:
    from lxml import etree
except ImportError:  # pragma: no cover - ResizeModule reports lxml missing (missing_required_lib)
    etree = None

from . import state as state_mod
from . import storage
from .connection import Connection, get_record, hostname, inactive_xml, libvirt, state_of
from .domain import check_domain_name, copy_disks, model_from_xml, role_disk, root_disk
from .errors import ResizeError

RECORD_SUMMARY = ("id", "status", "source", "dest", "updated", "rolled_back")


def _version(n):
    return "%d.%d.%d" % (n // 1000000, (n // 1000) % 1000, n % 1000)


def _bridges():
    base = "/sys/class/net"
    try:
        return sorted(n for n in os.listdir(base) if os.path.isdir(os.path.join(base, n, "bridge")))
    except OSError:
        return []


def describe_instance(dom):
    """Model, state, disks (with sizes) and record of one domain."""
    xml = inactive_xml(dom)
    model = model_from_xml(xml)
    disks = []
    for disk in model["disks"]:
        entry = dict(disk)
        if disk["path"] and not disk["network"] and disk["device"] == "disk" and os.path.exists(disk["path"]):
            entry.update(storage.image_info(disk["path"]))
        disks.append(entry)
    root = root_disk(disks)
    return {
        "name": model["name"],
        "uuid": model["uuid"],
        "state": state_of(dom),
        "vcpus": model["vcpus"],
        "memory_mb": model["memory_mb"],
        "disks": disks,
        "root_disk": root,
        "copy_disks": copy_disks(disks),
        "ephemeral_disk": role_disk(disks, "ephemeral"),
        "swap_disk": role_disk(disks, "swap"),
        "interfaces": model["interfaces"],
        "boot_files": model["boot_files"],
        "model": model,
        "xml": xml,
        "migration": get_record(dom),
    }


def gather(params):
    with Connection(params["uri"]) as c:
        conn = c.conn
        arch, memory_mb, cpus = conn.getInfo()[:3]
        caps = etree.fromstring(conn.getCapabilities().encode("utf-8"))
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
            "bridges": _bridges(),
            "networks": networks,
            "domains": sorted(domains, key=lambda d: d["name"]),
        }
        hv.update(state_mod.claimed_totals(params["state_dir"]))
        result = {"changed": False, "hypervisor": hv}
        if params.get("instance"):
            name = check_domain_name(params["instance"])
            dom = c.find(name)
            try:
                result["instance"] = describe_instance(dom) if dom is not None else None
            except ResizeError as exc:
                exc.domain, exc.host = name, hostname()
                raise
        return result
