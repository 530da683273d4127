# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""virt_finish_migration: grow, define, restore power state on the destination. Private."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import stat

from . import _policy, parts, precopy, storage
from . import record as record_mod
from . import state as state_mod
from ._transfer import keys, local, markers
from .connection import Connection, get_record, hostname, libvirt, libvirt_error, set_record, state_of
from .domain import check_domain_name, model_from_xml, normalize, parse_xml, role_disk, root_disk, summary
from .errors import ResizeError, ValidationError
from .facts import other_domains_paths, storage_roots
from .faults import checkpoint
from .flavor import GIB


def _check_xml(xml, rec, name, host):
    got = summary(xml)
    if got["name"] != name or got["uuid"] != rec["uuid"]:
        raise ValidationError("the domain XML is for %s (%s), not for %s (%s) of migration %s"
                              % (got["name"], got["uuid"], name, rec["uuid"], rec["id"]), domain=name, host=host)
    flavor = rec["new_flavor"]
    if got["vcpus"] != flavor["vcpus"] or got["memory_mb"] != flavor["memory_mb"]:
        raise ValidationError("the domain XML has %d vCPUs / %d MiB but flavor %s wants %d / %d"
                              % (got["vcpus"], got["memory_mb"], flavor.get("name"), flavor["vcpus"],
                                 flavor["memory_mb"]), domain=name, host=host)
    missing = sorted(set(d["path"] for d in rec["disks"]) - set(got["disks"]))
    if missing:
        raise ValidationError("the domain XML does not use the copied disk(s) %s" % ", ".join(missing),
                              domain=name, host=host)
    return got


CLOSED_ALLOWED = "allowed-closed.json"


def close_receiver(state_dir, mid, name, host):
    """From finish on, the receiver writes nothing more for this migration: under its lock (refused
    while a copy is being received), its list of allowed paths is set aside (revert still reads it,
    for part files). A source cannot slip in a delta after finish counted them, or one it removed."""
    mdir = state_mod.migration_dir(state_dir, mid)
    allowed = os.path.join(mdir, "allowed.json")
    if not os.path.exists(allowed):
        return
    fd = os.open(os.path.join(mdir, "receive.lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValidationError("a copy into this host is still running for migration %s" % mid, domain=name,
                                  host=host, hint="wait for the power-off and copy step to end")
        os.replace(allowed, os.path.join(mdir, CLOSED_ALLOWED))
    finally:
        os.close(fd)


def reopen_receiver(state_dir, mid):
    mdir = state_mod.migration_dir(state_dir, mid)
    if os.path.exists(os.path.join(mdir, CLOSED_ALLOWED)):
        os.replace(os.path.join(mdir, CLOSED_ALLOWED), os.path.join(mdir, "allowed.json"))


def shared_disks(rec):
    """Disks of the record that are on storage shared with the source: already here before the
    copy, beside a marker the source acknowledged, with the source's backup beside them. Only then
    may this host change them (the backup is what revert restores)."""
    shared = []
    for disk in rec.get("disks", []):
        if not disk.get("present"):
            continue
        mark = markers.read_marker(markers.marker_path(disk["path"], rec["id"]))
        if not mark or mark.get("migration") != rec["id"] or not mark.get("seen_by"):
            continue
        if not local.is_regular(disk["path"] + local.BACKUP_SUFFIX):
            raise ValidationError("disk %s is on shared storage but its backup %s%s is missing; refusing to use it"
                                  % (disk["path"], disk["path"], local.BACKUP_SUFFIX), host=hostname())
        shared.append(disk["path"])
    return shared


def made_here(entry, uuid):
    """A directory prep made for this migration (its record names it), still that directory: the
    same inode, or, if prep was stopped before it noted the inode, empty."""
    path = entry.get("path") if isinstance(entry, dict) else None
    if not path or not uuid or path not in parts.may_make(uuid):
        return False
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        return False
    if "ino" in entry:
        return (st.st_dev, st.st_ino) == (entry.get("dev"), entry.get("ino"))
    return not os.listdir(path)


def _check_tpm_state(rec, name, host):
    """P4/P5 again, just before define: vTPM state kept here for the VM's UUID is the directory this
    migration made (same inode) or none; anything else there would become the VM's TPM."""
    path = parts.tpm_state_dir(rec["uuid"])
    if not os.path.lexists(path):
        return
    if not any(e.get("path") == path and made_here(e, rec["uuid"]) for e in rec.get("made_dirs") or []):
        raise ValidationError("%s is on this host and is not the directory this migration made for the VM's TPM "
                              "state; it would become this VM's [rule P4, %s]" % (path, _policy.SECURITY_DOC),
                              domain=name, host=host, hint="nothing was defined; find out who made it")


def remove_markers(rec):
    """Delete this migration's shared-storage markers (listed in the record, so only ours)."""
    return markers.remove_markers(rec.get("markers"))


def check_images(xml, owned, name, host):
    """R3: every disk image this host is about to use - received, taken over on shared storage, or
    only read - read as the format its definition declares (never probed), names no backing file
    and no external data file."""
    for disk in model_from_xml(xml)["disks"]:
        path = disk.get("path")
        if not path or disk.get("network") or disk.get("type") != "file":
            continue
        if path in owned and not local.is_regular(path):
            raise ValidationError("disk %s is not a regular file here" % path, domain=name, host=host)
        if path not in owned and not os.path.exists(path):
            continue  # an empty drive, or media the review already required to exist
        problem = storage.image_refs_problem(path, disk["format"])
        if problem:
            raise ValidationError("disk %s %s; refused [rule R3, %s]" % (path, problem, _policy.SECURITY_DOC),
                                  domain=name, host=host, hint="nothing of it was used")


def check_domain_here(conn, params, xml, name, host, fs=None):
    """The definition about to be defined here, against this host's rules (docs/security.md):
    its elements, its paths under this host's roots, and no file of another domain here."""
    roots, _dropped = storage_roots(conn, params["instances_path"])
    root = parse_xml(xml)
    problems, _review = _policy.check_domain(root, roots, params["allow_host_access"], fs=fs or _policy.LocalFS(),
                                             others=other_domains_paths(conn, root.findtext("uuid")))
    store = _policy.default_nvram_of(root)
    if store and os.path.lexists(store):
        problems.append("%s is already on this host; libvirt would take it as this VM's UEFI variable store "
                        "[rule P4, %s]" % (store, _policy.SECURITY_DOC))
    _policy.refuse(problems, domain=name, host=host)


def apply_flavor_disks(xml, flavor, owned):
    """Grow the ephemeral disk to ephemeral_gb and recreate swap at swap_mb, for disks in `owned`
    (paths this migration may change). Returns what was done."""
    done = []
    model = model_from_xml(xml)
    eph = role_disk(model, "ephemeral")
    if eph and eph["path"] in owned and flavor.get("ephemeral_gb"):
        if storage.grow(eph["path"], eph["format"], flavor["ephemeral_gb"] * GIB):
            done.append("grew ephemeral disk %s to %d GiB" % (eph["path"], flavor["ephemeral_gb"]))
    swap = role_disk(model, "swap")
    if swap and swap["path"] in owned and flavor.get("swap_mb"):
        size = flavor["swap_mb"] * 1024 * 1024
        if storage.image_info(swap["path"], swap["format"])["virtual_size"] != size:
            storage.recreate(swap["path"], swap["format"], size)
            done.append("recreated swap disk %s at %d MiB" % (swap["path"], flavor["swap_mb"]))
    return done


def define_and_start(c, params, xml, dom_rec, state_rec, name, host, unchanged, defined=None):
    """Define the domain with its record inside, note it in the state dir, start it if it was running."""
    try:
        # The record goes in with the definition: a domain of ours never exists without it.
        dom = c.conn.defineXMLFlags(record_mod.embed(xml, dom_rec), libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        if defined is not None:
            defined["yes"] = True
    except libvirt.libvirtError as exc:
        raise libvirt_error(exc, "libvirt refused the new domain XML", domain=name,
                            hint="check the template; %s" % unchanged)
    if params.get("autostart"):
        try:
            dom.setAutostart(1)
        except libvirt.libvirtError as exc:
            raise libvirt_error(exc, "the resized domain was defined but autostart could not be set", domain=name)
    state_mod.write_record(params["state_dir"], state_rec)
    checkpoint("define", domain=name, host=host)
    if params["power_state"] == "running":
        try:
            dom.create()
        except libvirt.libvirtError as exc:
            raise libvirt_error(exc, "the resized domain was defined but did not start", domain=name)
    checkpoint("start", domain=name, host=host)
    return dom


def finish(params, check_mode):
    name = check_domain_name(params["instance"])
    mid = state_mod.check_id(params["migration_id"])
    host = hostname()
    rec = state_mod.read_record(params["state_dir"], mid)
    lock = contextlib.nullcontext() if check_mode or not rec else \
        state_mod.vm_lock(params["state_dir"], rec["uuid"], "finish", mid, name, host)
    defined = {"yes": False}
    try:
        with lock:
            rec = state_mod.read_record(params["state_dir"], mid)  # again, under the lock
            if rec and rec.get("same_host"):
                return finish_in_place(params, check_mode, rec, name, mid, host)
            return _finish(params, check_mode, rec, name, mid, host, defined)
    except ResizeError as exc:
        # Whether this host defined the VM before the failure: the source may start the original
        # again only if the destination never did, or has removed it (the role's rescue).
        exc.details = dict(exc.details or {}, defined=defined["yes"])
        raise


def _finish(params, check_mode, rec, name, mid, host, defined):
    xml = params["domain_xml"]
    with Connection(params["uri"]) as c:
        dom = c.find(name)
        if dom is not None and not (rec is None and check_mode):
            existing = get_record(dom)
            if existing and existing.get("id") == mid and existing.get("status") == "finished":
                return {"changed": False, "migration": existing, "state": state_of(dom),
                        "msg": "migration already finished here"}
            raise ValidationError("a domain of this name is already defined here and is not this migration's",
                                  domain=name, host=host)
        diff = {"before": normalize(params["source_xml"]) if params.get("source_xml") else "",
                "after": normalize(xml)}
        if rec is None and check_mode:
            # A whole-plan dry run: prep ran in check mode too, so there is no record to check against.
            got = summary(xml)
            if got["name"] != name:
                raise ValidationError("the domain XML is for %s, not for %s" % (got["name"], name),
                                      domain=name, host=host)
            return {"changed": True, "diff": diff, "domain": got}
        if rec is None:
            raise ValidationError("no open migration %s on this host" % mid, domain=name, host=host,
                                  hint="run virt_resize_prep on this host first")
        if rec["status"] != "pre-migrating":
            raise ValidationError("migration %s is %s here, expected pre-migrating" % (mid, rec["status"]),
                                  domain=name, host=host)
        _check_xml(xml, rec, name, host)
        if not check_mode:
            close_receiver(params["state_dir"], mid, name, host)
        got = {r["path"]: r for r in state_mod.received(params["state_dir"], mid)}
        shared = shared_disks(rec)
        for disk in rec["disks"]:
            if disk["path"] in shared:
                continue
            if disk["path"] not in got or not os.path.exists(disk["path"]):
                if not check_mode:
                    reopen_receiver(params["state_dir"], mid)  # the copy may still come
                raise ValidationError("disk %s has not been received and verified here" % disk["path"],
                                      domain=name, host=host, hint="run virt_power_off_migrate on the source")
        owned = set(got) | set(shared)
        whole = [(d["path"], d["format"]) for d in model_from_xml(xml)["disks"]
                 if d.get("path") in got and d["path"] not in shared and d.get("device") == "disk"]
        if rec.get("reviewed_xml_sha256") != hashlib.sha256(xml.encode("utf-8")).hexdigest():
            # Not the definition prep reviewed here before the power-off: review this one now. (The
            # same one is not reviewed again: that would only add to the VM's downtime.)
            check_domain_here(c.conn, params, xml, name, host)
        _check_tpm_state(rec, name, host)
        root = root_disk(model_from_xml(xml))
        new_root = rec["new_flavor"]["root_gb"] * GIB
        result = {"changed": True, "diff": diff}
        # R3 on what was received before anything opens it read-write (a commit opens the disk with
        # whatever its own header names); then what the guest wrote during the pre-copy (R4).
        check_images(xml, owned, name, host)
        if check_mode:
            return result
        committed = list(rec.get("committed") or [])

        def note(delta):
            committed.append(delta)
            state_mod.write_record(params["state_dir"], dict(rec, committed=committed))

        deltas = precopy.commit_received(whole, set(got), committed, note, name=name, host=host)
        rec = dict(rec, committed=committed) if committed else rec
        owned -= set(committed)
        if deltas:
            check_images(xml, owned, name, host)
        grown = False
        if root and root["path"] in owned and new_root:
            grown = storage.grow(root["path"], root["format"], new_root)
        disk_actions = apply_flavor_disks(xml, rec["new_flavor"], owned)
        checkpoint("grow", domain=name, host=host)
        rec = record_mod.transition(rec, "migrating", "%d disk(s) received and verified%s"
                                    % (len(got), "; %d on shared storage" % len(shared) if shared else ""))
        rec = record_mod.transition(rec, "post-migrating", "root disk %s" % ("grown" if grown else "kept"))
        rec = record_mod.transition(rec, "finished", "defined on %s; waiting for confirm or revert" % host)
        dom = define_and_start(c, params, xml, rec, rec, name, host, "nothing was defined", defined)
        keys.edit_authorized_keys(params["authorized_keys"], remove_id=mid)
        for leftover in ("receive.py", "allowed.json", CLOSED_ALLOWED, "paths.json"):
            path = os.path.join(state_mod.migration_dir(params["state_dir"], mid), leftover)
            if os.path.exists(path):
                os.unlink(path)
        remove_markers(rec)
        info = storage.image_info(root["path"], root["format"]) if root else None
        result.update({"migration": get_record(dom), "state": state_of(dom), "root_disk": info,
                       "grown": grown, "disk_actions": deltas + disk_actions, "domain": summary(xml)})
        return result


def finish_in_place(params, check_mode, rec, name, mid, host):
    """Same-host resize: grow the VM's own disks (backed up beside them) and redefine it."""
    xml = params["domain_xml"]
    with Connection(params["uri"]) as c:
        dom = c.find(name)
        drec = get_record(dom) if dom is not None else None
        if drec and drec.get("id") == mid and drec.get("status") == "finished":
            return {"changed": False, "migration": drec, "state": state_of(dom), "msg": "migration already finished"}
        if not drec or drec.get("id") != mid or drec.get("status") != "post-migrating":
            raise ValidationError("the VM's record is %s, expected migration %s post-migrating"
                                  % ("%s %s" % (drec.get("id"), drec.get("status")) if drec else "missing", mid),
                                  domain=name, host=host, hint="run virt_power_off_migrate first")
        _check_xml(xml, rec, name, host)
        missing = [d["backup"] for d in drec.get("disks", []) if not os.path.exists(d.get("backup") or "")]
        if missing:
            raise ValidationError("backup(s) %s missing; refusing to change the disks" % ", ".join(missing),
                                  domain=name, host=host)
        result = {"changed": True, "diff": {"before": normalize(drec.get("original_xml") or ""),
                                            "after": normalize(xml)}}
        if check_mode:
            return result
        # Say that the originals are about to change before they do: revert then restores the backups.
        drec = dict(drec, modified=True)
        set_record(dom, drec)
        root = root_disk(model_from_xml(xml))
        grown = storage.grow(root["path"], root["format"], rec["new_flavor"]["root_gb"] * GIB) if root else False
        disk_actions = apply_flavor_disks(xml, rec["new_flavor"], set(d["path"] for d in drec.get("disks", [])))
        checkpoint("grow", domain=name, host=host)
        new = record_mod.transition(drec, "finished", "resized in place on %s; waiting for confirm or revert" % host)
        new["claim"] = rec.get("claim")
        dom = define_and_start(c, params, xml, new, dict(rec, status="finished", history=new["history"]), name, host,
                               "the original definition is unchanged")
        info = storage.image_info(root["path"], root["format"]) if root else None
        result.update({"migration": get_record(dom), "state": state_of(dom), "root_disk": info,
                       "grown": grown, "disk_actions": disk_actions, "domain": summary(xml)})
        return result
