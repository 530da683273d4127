# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""virt_resize_prep: validate on the destination, claim, open the record. Private."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import shutil
import stat

from . import _policy, parts, precopy, storage
from . import finish as finish_mod
from . import record as record_mod
from . import state as state_mod
from ._transfer import keys, local, markers, receiver
from .connection import Connection, hostname
from .domain import check_domain_name, model_from_xml, moved_files, parse_xml
from .errors import ValidationError
from .facts import gather
from .faults import checkpoint
from .flavor import GIB, capacity_reasons, normalize_flavor

# How long the one-off key outlives the copy timeout (sshd refuses it by itself afterwards).
KEY_MARGIN_SECONDS = 900
# R2/P5: the largest state file accepted per kind: a vTPM's (swtpm's are a few KiB; libtpms caps its
# NV memory far below) and a UEFI variable store (x86 ones are 128 KiB-4 MiB, ARM's 64 MiB).
STATE_FILE_MAX = {"tpm": 1 << 20, "nvram": 64 << 20}


def _check_disks(disks, name, host, made=()):
    """Returns (paths, present): the disks' paths, and those that exist here already. A present
    disk is either on storage shared with the source (the source will find this migration's
    marker beside it) or a stale file (the source refuses the resize before it powers off)."""
    paths, present = [], []
    for disk in disks:
        path = disk.get("path")
        if not path or not os.path.isabs(path) or os.path.normpath(path) != path:
            raise ValidationError("disk path %r is not a normalized absolute path" % (path,), domain=name, host=host)
        if disk.get("backing_file"):
            raise ValidationError("disk %s has a backing file (%s); images with backing chains are not "
                                  "supported yet" % (path, disk["backing_file"]), domain=name, host=host,
                                  hint="flatten it first: qemu-img convert or virsh blockpull")
        if os.path.dirname(path) not in made and not os.path.isdir(os.path.dirname(path)):
            raise ValidationError("the storage path %s that disk %s needs does not exist on the destination"
                                  % (os.path.dirname(path), path), domain=name, host=host)
        if os.path.lexists(path):
            present.append(path)
        paths.append(path)
    if len(set(paths)) != len(paths):
        raise ValidationError("the same disk path is listed twice", domain=name, host=host)
    return paths, present


def _check_backups(disks, name, host):
    """Same-host resize: the disks are the VM's own; their backups must not exist yet."""
    paths = []
    for disk in disks:
        path = disk.get("path")
        if not path or not os.path.isfile(path):
            raise ValidationError("disk %r of the VM is not a file on this host" % (path,), domain=name, host=host)
        if disk.get("backing_file"):
            raise ValidationError("disk %s has a backing file (%s); images with backing chains are not "
                                  "supported yet" % (path, disk["backing_file"]), domain=name, host=host)
        if os.path.lexists(path + local.BACKUP_SUFFIX):
            raise ValidationError("a backup %s%s already exists" % (path, local.BACKUP_SUFFIX), domain=name,
                                  host=host, hint="it is left from an earlier resize: confirm or revert that first")
        paths.append(path)
    return paths


class _WouldMake(_policy.LocalFS):
    """The file system as it will be once prep has made `dirs` (check mode makes nothing)."""

    def __init__(self, dirs):
        self.dirs = set(dirs)

    def lstat(self, path):
        if path in self.dirs:
            return os.stat_result((stat.S_IFDIR | 0o755,) + (0,) * 9)
        return super().lstat(path)


def _check_domain(params, name, host, check_mode):
    """docs/security.md: what the source's definition asks of this host, checked here against this
    host's own roots, file system and other domains (P0-P4, D0-D9, X2, R3). The disks to receive
    are the domain's own; its NICs are the definition's, not a list the source reported."""
    nvram = [d["path"] for d in moved_files(model_from_xml(params["domain_xml"])) if d["device"] == "nvram"]
    made = [root for root in _policy.NVRAM_ROOTS
            if any(_policy.under(p, root) for p in nvram) and not os.path.lexists(root)]
    for root in made:
        # libvirt's NVRAM directory exists only once a UEFI VM has started here: make it (check
        # mode: judge the paths as if it had been made).
        if not check_mode:
            os.makedirs(root, mode=0o755)
    with Connection(params["uri"]) as c:
        finish_mod.check_domain_here(c.conn, params, params["domain_xml"], name, host,
                                     fs=_WouldMake(made) if check_mode else None)
    model = model_from_xml(params["domain_xml"])
    for disk in model["disks"]:
        if disk["type"] == "file" and disk["path"] and (disk["readonly"] or disk["device"] != "disk") \
                and os.path.exists(disk["path"]):
            problem = storage.image_refs_problem(disk["path"], disk["format"])
            if problem:
                raise ValidationError("disk %s %s; refused [rule R3, %s]"
                                      % (disk["path"], problem, _policy.SECURITY_DOC), domain=name, host=host)
    if parts.emulated_tpm(parse_xml(params["domain_xml"])) and shutil.which("swtpm") is None:
        raise ValidationError("the VM has an emulated TPM and this host has no swtpm to run it", domain=name,
                              host=host, hint="install swtpm (Debian: apt install swtpm swtpm-tools) here")
    # A vTPM's state is kept by UUID: state left here for this UUID would become this VM's.
    swtpm = parts.tpm_state_dir(params["uuid"])
    if os.path.lexists(swtpm):
        raise ValidationError("TPM state for UUID %s is already on this host (%s); it would become this VM's "
                              "[rule P4, %s]" % (params["uuid"], swtpm, _policy.SECURITY_DOC), domain=name, host=host,
                              hint="remove it if it is left from a VM that is gone")
    if model["name"] != name or model["uuid"] != params["uuid"]:
        raise ValidationError("domain_xml is for %s (%s), not for %s (%s)"
                              % (model["name"], model["uuid"], name, params["uuid"]), domain=name, host=host)
    listed = set(d.get("path") or "" for d in params["disks"])
    own = set(d["path"] for d in moved_files(model, every=True))
    required = set(d["path"] for d in moved_files(model, every=True) if not d.get("optional"))
    if not required <= listed <= own or len(listed) != len(params["disks"]):
        raise ValidationError("disks %s are not the disks and state files of domain_xml (%s)"
                              % (", ".join(sorted(listed)), ", ".join(sorted(own))), domain=name, host=host)
    return model["interfaces"], made


def _state_dirs(params, name, host):
    """The directories to make for the state files to receive (a vTPM's, parts.made_dirs): none may
    exist (P4), and where they go must be a real directory. Returns them, outermost first."""
    own = {d["path"]: d for d in moved_files(model_from_xml(params["domain_xml"]), every=True)}
    dirs = []
    for disk in params["disks"]:
        device = own[disk["path"]]["device"]
        if int(disk.get("virtual_size") or 0) > STATE_FILE_MAX.get(device, float("inf")):
            raise ValidationError("%s %s is %s bytes, more than the %d such a file takes [rule R2, %s]"
                                  % ("vTPM state" if device == "tpm" else "UEFI NVRAM store", disk["path"],
                                     disk.get("virtual_size"), STATE_FILE_MAX[device], _policy.SECURITY_DOC),
                                  domain=name, host=host)
        for path in parts.made_dirs(own[disk["path"]], params["uuid"]):
            if os.path.lexists(path):
                raise ValidationError("%s is already on this host; it would become this VM's [rule P4, %s]"
                                      % (path, _policy.SECURITY_DOC), domain=name, host=host,
                                      hint="remove it if it is left from a VM that is gone")
            parent = os.path.dirname(path)
            if parent not in dirs and os.path.lexists(parent) and not stat.S_ISDIR(os.lstat(parent).st_mode):
                raise ValidationError("%s is not a directory [rule P1, %s]" % (parent, _policy.SECURITY_DOC),
                                      domain=name, host=host)
            if path not in dirs:
                dirs.append(path)
    return dirs


def _check_deltas(disks, present, name, host):
    """No file where a pre-copy's delta of a disk would be received (the receiver never replaces one;
    refused here, before anything is claimed, naming it)."""
    left = [p for d in disks if d.get("path") not in present and d.get("device", "disk") == "disk"
            for p in precopy.all_delta_paths(d["path"]) if os.path.lexists(p)]
    if left:
        raise ValidationError("%s already on this host, where a delta of the pre-copy would be received"
                              % ", ".join(left), domain=name, host=host,
                              hint="nothing was changed; remove it if no resize of this VM is open")


def max_stream_size(disk):
    """R2: the largest file the receiver accepts for a disk: its virtual size, plus room for a
    qcow2's metadata growing while the VM still runs."""
    virtual = int(disk.get("virtual_size") or 0)
    if disk.get("device") == "tpm":
        return STATE_FILE_MAX["tpm"]  # swtpm's state may grow while the VM still runs
    if disk.get("format") == "raw":
        return virtual
    return virtual + virtual // 64 + (256 << 20)


def _check_networks(interfaces, hv, name, host):
    for nic in interfaces or []:
        src = nic.get("source") or {}
        if nic.get("type") == "bridge" and src.get("bridge") not in hv["bridges"]:
            raise ValidationError("bridge %s used by NIC %s is not present on the destination"
                                  % (src.get("bridge"), nic.get("mac")), domain=name, host=host)
        if nic.get("type") == "network" and src.get("network") not in hv["networks"]:
            raise ValidationError("libvirt network %s used by NIC %s is not active on the destination"
                                  % (src.get("network"), nic.get("mac")), domain=name, host=host)


def prep(params, check_mode):
    name = check_domain_name(params["instance"])
    host = hostname()
    try:
        parts.check_uuid(params["uuid"])
    except ValidationError as exc:
        exc.domain, exc.host = name, host
        raise
    flavor = normalize_flavor(params["flavor"], params["flavor"].get("name"))
    old_flavor = params.get("old_flavor")
    disks = params["disks"]
    host_key = keys.read_host_key(params["ssh_host_key"])
    _policy.check_public_key(params["transfer_public_key"])
    _policy.check_allow(params["allow_host_access"])
    lock = contextlib.nullcontext() if check_mode else state_mod.locked(params["state_dir"])
    with lock:
        facts = gather({"uri": params["uri"], "state_dir": params["state_dir"],
                        "instances_path": params["instances_path"], "instance": None})
        hv = facts["hypervisor"]
        same_host = params["same_host"]
        with Connection(params["uri"]) as c:
            dom = c.find(name)
            if same_host:
                if dom is None or dom.UUIDString() != params["uuid"]:
                    raise ValidationError("a same-host resize needs the VM (uuid %s) defined on this host"
                                          % params["uuid"], domain=name, host=host)
            elif dom is not None or c.find_uuid(params["uuid"]) is not None:
                raise ValidationError("a domain with this name or UUID is already defined on the destination",
                                      domain=name, host=host,
                                      hint="the VM is already there: finish, confirm or revert the earlier "
                                           "resize, or choose another destination")
        for rec in state_mod.records(params["state_dir"]):
            # By name and by UUID: a second VM with this UUID (from another host) would share the
            # state libvirt keeps by UUID (vTPM) with this one.
            if (rec.get("instance") == name or rec.get("uuid") == params["uuid"]) and record_mod.is_open(rec):
                raise ValidationError("migration %s of this VM is still open here (status %s)"
                                      % (rec["id"], rec["status"]), domain=name, host=host,
                                      hint="confirm or revert it first")
        if same_host:
            paths, present = _check_backups(disks, name, host), []
        else:
            interfaces, roots_made = _check_domain(params, name, host, check_mode)
            sources = keys.source_addresses(params["source_address"] or params["source_host"])
            made = _state_dirs(params, name, host)
            paths, present = _check_disks(disks, name, host, made + roots_made)
            rounds = params.get("precopy_rounds", 3)
            if not 0 <= rounds <= precopy.MAX_ROUNDS:
                raise ValidationError("precopy_rounds must be between 0 and %d, got %d" % (precopy.MAX_ROUNDS, rounds),
                                      domain=name, host=host)
            _check_deltas(disks, present, name, host)
        _check_networks(params["interfaces"] if same_host else interfaces, hv, name, host)
        # Disks already here (shared storage) take no new space.
        disk_bytes = sum(int(d.get("allocation") or 0) for d in disks if d.get("path") not in present)
        root_growth = max(flavor["root_gb"] * GIB - int((disks[0] if disks else {}).get("virtual_size") or 0), 0)
        request = {"vcpus": flavor["vcpus"], "memory_mb": flavor["memory_mb"], "disk_bytes": disk_bytes}
        if same_host:
            # The VM's current size is already counted here: claim only the increase (and the backups).
            cur = next(d for d in hv["domains"] if d["name"] == name)
            request["vcpus"] = max(flavor["vcpus"] - cur["vcpus"], 0)
            request["memory_mb"] = max(flavor["memory_mb"] - cur["memory_mb"], 0)
        limits = {k: params[k] for k in ("cpu_allocation_ratio", "ram_allocation_ratio",
                                         "disk_allocation_ratio", "reserved_host_memory_mb")
                  if params.get(k) is not None}
        reasons = capacity_reasons(dict(hv, **limits), request)
        if reasons:
            raise ValidationError("the destination cannot take this VM: %s" % "; ".join(reasons),
                                  domain=name, host=host, details={"reasons": reasons})
        mid = params.get("migration_id")
        if mid:
            state_mod.check_id(mid)
            if not check_mode and os.path.exists(state_mod.migration_dir(params["state_dir"], mid)):
                raise ValidationError("migration %s already exists here" % mid, domain=name, host=host,
                                      hint="use a new migration id for a new resize")
        rec = record_mod.new_record(name, params["uuid"], params["source_host"], host, old_flavor, flavor,
                                    migration_id=mid,
                                    batch=state_mod.check_id(params["batch_id"]) if params.get("batch_id") else None)
        rec["claim"] = dict(request, root_growth_bytes=root_growth)
        if not same_host:
            # What this host reviewed: finish defines only this very definition (docs/security.md).
            rec["reviewed_xml_sha256"] = hashlib.sha256(params["domain_xml"].encode("utf-8")).hexdigest()
        if same_host:
            rec["same_host"] = True
        else:
            # Named before they are made (revert finds even half of them), with their inode once made:
            # revert removes one only if it is still that directory (or empty).
            rec["made_dirs"] = [{"path": p} for p in made]
        rec["disks"] = [dict({"path": p}, **({"present": True} if p in present else {})) for p in paths]
        result = {"changed": True, "migration_id": rec["id"], "migration": rec, "claim": rec["claim"],
                  "present": present,
                  "destination": {"hostname": host, "free_disk_bytes": hv["free_disk_bytes"]},
                  "transfer": {"host_key": host_key}}
        if check_mode:
            result["migration_id"] = mid
            return result
        state_mod.write_record(params["state_dir"], rec)
        if same_host:
            checkpoint("claim", domain=name, host=host)
            return result
        mdir = state_mod.migration_dir(params["state_dir"], rec["id"])
        # Sizes as declared, formats as this host reads them in the definition it reviewed.
        kinds = {d["path"]: {"format": d["format"], "device": d["device"]}
                 for d in moved_files(model_from_xml(params["domain_xml"]), every=True)}
        for i, path in enumerate(made):
            if not os.path.isdir(os.path.dirname(path)):  # libvirt's swtpm root: as libvirt makes it
                os.makedirs(os.path.dirname(path), mode=0o711)
            try:
                os.mkdir(path, 0o711 if i == 0 else 0o700)
            except FileExistsError:
                rec["made_dirs"] = rec["made_dirs"][:i]  # not ours: never removed by revert
                state_mod.write_record(params["state_dir"], rec)
                raise ValidationError("%s appeared on this host while the resize was prepared; it would become "
                                      "this VM's [rule P4, %s]" % (path, _policy.SECURITY_DOC), domain=name, host=host)
            st = os.lstat(path)
            rec["made_dirs"][i] = {"path": path, "dev": st.st_dev, "ino": st.st_ino}
            state_mod.write_record(params["state_dir"], rec)
        # The receiver may write only disks that are not here yet, each up to its size (R1, R2), and
        # the pre-copy's deltas of each such disk (qcow2 over it, committed by finish: R4).
        allowed = {d["path"]: {"max_size": max_stream_size(dict(d, **kinds[d["path"]]))}
                   for d in disks if d["path"] not in present}
        for d in disks:
            if d["path"] in allowed and precopy.eligible(dict(d, **kinds[d["path"]])):
                for delta in precopy.all_delta_paths(d["path"])[:rounds]:
                    allowed[delta] = {"max_size": max_stream_size(dict(d, format="qcow2", device="disk"))}
        state_mod.write_file(params["state_dir"], rec["id"], "allowed.json", json.dumps(allowed))
        # Every disk path, for the source's check before the power-off (it only reads).
        state_mod.write_file(params["state_dir"], rec["id"], "paths.json", json.dumps(paths))
        # One marker per disk directory: the source finds it there if the directory is shared.
        rec["markers"] = []
        for directory in sorted(set(os.path.dirname(p) for p in paths)):
            rec["markers"].append(markers.marker_path(os.path.join(directory, "x"), rec["id"]))
            state_mod.write_record(params["state_dir"], rec)  # named before made: revert finds it
            markers.make_marker(directory, rec["id"], host)
        state_mod.write_file(params["state_dir"], rec["id"], "receive.py", inspect.getsource(receiver), 0o700)
        keys.edit_authorized_keys(params["authorized_keys"],
                                  add=keys.authorized_line(params["transfer_public_key"], mdir, rec["id"], sources,
                                                           params["copy_timeout"] + KEY_MARGIN_SECONDS))
        checkpoint("claim", domain=name, host=host)
    return result
