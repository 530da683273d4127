# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""virt_power_off_migrate: power off on the source, keep the backup, copy disks. Private."""

from __future__ import annotations

import os
import shutil
import tempfile

from . import record as record_mod
from . import state as state_mod
from . import transfer
from .connection import Connection, hostname, power_off, set_record, state_of
from .domain import check_domain_name
from .errors import ResizeError, ValidationError
from .facts import describe_instance
from .faults import checkpoint
from .flavor import MOVABLE_STATES


def _known_hosts_line(dest, port, host_key):
    name = dest if int(port) == 22 else "[%s]:%d" % (dest, int(port))
    return "%s %s\n" % (name, host_key.strip())


def power_off_migrate(params, check_mode):
    name = check_domain_name(params["instance"])
    mid = state_mod.check_id(params["migration_id"])
    host = hostname()
    with Connection(params["uri"]) as c:
        dom = c.find(name)
        if dom is None:
            raise ValidationError("domain is not defined on this host", domain=name, host=host)
        inst = describe_instance(dom)
        rec = inst["migration"]
        if rec and rec.get("id") == mid and rec.get("status") == "post-migrating":
            return {"changed": False, "migration": rec, "old_power_state": rec.get("old_power_state"),
                    "disks": rec.get("disks", []), "msg": "disks already copied for this migration"}
        if record_mod.is_open(rec):
            raise ValidationError("another migration of this VM is open: %s (status %s)"
                                  % (rec["id"], rec["status"]), domain=name, host=host,
                                  hint="confirm or revert it first")
        if inst["state"] not in MOVABLE_STATES:
            raise ValidationError("the VM is %s; only a running or shut-off VM can be resized" % inst["state"],
                                  domain=name, host=host, hint="resume or repair it first")
        disks = inst["copy_disks"]
        if params.get("same_host"):
            for d in disks:
                if os.path.lexists(d["path"] + transfer.BACKUP_SUFFIX):
                    raise ValidationError("a backup %s%s already exists" % (d["path"], transfer.BACKUP_SUFFIX),
                                          domain=name, host=host,
                                          hint="it is left from an earlier resize: confirm or revert that first")
        plan = {"changed": True, "old_power_state": inst["state"],
                "disks": [{"path": d["path"], "allocation": d.get("allocation"), "virtual_size": d.get("virtual_size")}
                          for d in disks]}
        if check_mode:
            return plan
        old_state = inst["state"]
        rec = record_mod.new_record(name, inst["uuid"], host, params["dest_host"], params.get("old_flavor"),
                                    params.get("new_flavor"), migration_id=mid,
                                    note="claim made on %s" % params["dest_host"])
        rec["old_power_state"] = old_state
        if params.get("same_host"):
            # Resize in place: the backup is a verified copy beside each disk, and the original
            # definition travels in the record, so that revert can restore both exactly.
            rec["same_host"] = True
            rec["original_xml"] = inst["xml"]
            # Name the backups before making them, so that a rollback finds even a half-made one
            # (the paths were checked free above: whatever is there later is ours).
            rec["disks"] = [{"path": d["path"], "backup": d["path"] + transfer.BACKUP_SUFFIX} for d in disks]
        rec = record_mod.transition(rec, "migrating", "powering off on %s" % host)
        set_record(dom, rec)
        try:
            stop = power_off(dom, timeout=params["shutdown_timeout"],
                             retry_interval=params["shutdown_retry_interval"])
            rec = record_mod.transition(rec, "migrating", "stopped (%s, %.1fs); copying %d disk(s) to %s"
                                        % (stop["method"], stop["seconds"], len(disks),
                                           "backups on this host" if params.get("same_host") else params["dest"]))
            set_record(dom, rec)
            checkpoint("shutdown")
            if params.get("same_host"):
                copied = [transfer.local_copy(d["path"], d["path"] + transfer.BACKUP_SUFFIX) for d in disks]
            else:
                copied = copy_disks(disks, params)
            checkpoint("copy")
        except ResizeError as exc:
            rec = record_mod.transition(rec, "error", exc.msg)
            set_record(dom, rec)
            exc.domain, exc.host = exc.domain or name, exc.host or host
            raise
        rec["disks"] = copied
        rec = record_mod.transition(rec, "post-migrating", "%d disk(s) copied and verified" % len(copied))
        set_record(dom, rec)
        plan.update({"shutdown": stop, "disks": copied, "migration": rec, "state": state_of(dom)})
        return plan


def copy_disks(disks, params):
    tmp = tempfile.mkdtemp(prefix="hvresize-xfer-")
    try:
        key = os.path.join(tmp, "id")
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(params["transfer_private_key"].strip() + "\n")
        known = os.path.join(tmp, "known_hosts")
        with open(known, "w") as fh:
            fh.write(_known_hosts_line(params["dest"], params["dest_port"], params["dest_host_key"]))
        argv = transfer.ssh_argv(params["dest"], params["dest_port"], key, known, user=params["transfer_user"],
                                 cipher=params["ssh_cipher"] or None)
        return [transfer.send(d["path"], argv) for d in disks]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
