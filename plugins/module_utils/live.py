# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Live resize: a running VM grows (or its memory changes) within its hot-plug ceilings, on its own
host, without a restart; and the ceilings a cold resize writes for the next time. Private.

The rules (which path, and why) are pure and shared by the controller (the resize_path filter,
which also runs in check mode) and the host (virt_live_resize checks them again against the
running domain). The host runs the change as a plan of reversible steps (plan.py): vCPUs hot-plugged
and memory set by the balloon (live and in the definition), then proved from the guest (the
balloon's actual size is what the guest's driver gave back; the vCPU count QEMU runs), then the
disks grown. A step the guest does not take within the wait undoes what was done. See
docs/architecture.md, "Live resize".
"""

from __future__ import annotations

import contextlib
import os
import time

from . import plan as plan_mod
from . import record as record_mod
from . import state as state_mod
from . import storage
from ._policy import SECURITY_DOC
from .connection import Connection, get_record, hostname, inactive_xml, libvirt, libvirt_error, set_record, wait_until
from .domain import _cpu_set, _cpu_text, check_domain_name, copy_disks, model_from_xml, normalize, parse_xml, to_bytes
from .errors import ResizeError, ValidationError, WaitTimeout
from .flavor import GIB, MIB, capacity_reasons, normalize_flavor

try:
    from lxml import etree
except ImportError:  # pragma: no cover
    etree = None

MODES = ("auto", "live", "cold")
KIB = 1024


def _size(n):
    if n % GIB == 0:
        return "%d GiB" % (n // GIB)
    return "%d MiB" % (n // MIB) if n % MIB == 0 else "%d bytes" % n


# ------------------------------------------------------------------------------------------------
# pure rules


def balloon(root):
    """Whether the domain has a memory balloon (libvirt adds a virtio one unless told `none`)."""
    mb = root.find("./devices/memballoon")
    return mb is None or mb.get("model") != "none"


def whole_memory(root):
    """What makes QEMU allocate or pin all of a VM's <memory> whatever its balloon says, or makes
    the balloon give memory back by itself: then a ceiling above the flavor would be memory the VM
    holds but no claim counts. None when there is nothing of the kind."""
    backing = root.find("memoryBacking")
    if backing is not None:
        for tag in ("hugepages", "locked"):
            if backing.find(tag) is not None:
                return "<memoryBacking><%s>" % tag
        alloc = backing.find("allocation")
        if alloc is not None and alloc.get("mode") == "immediate":
            return "<memoryBacking><allocation mode='immediate'>"
    if root.find("./devices/hostdev") is not None:
        return "a <hostdev> (a device's DMA pins all of the guest's memory)"
    if root.find("launchSecurity") is not None:
        return "<launchSecurity> (encrypted memory is pinned)"
    mb = root.find("./devices/memballoon")
    if mb is not None and mb.get("autodeflate") == "on":
        return "<memballoon autodeflate='on'> (the guest takes memory back by itself)"
    return None


def live_disks(instance, plan):
    """The disks a live resize grows: [{target, path, before, after, role}]."""
    out = []
    for key, disk in (("root_bytes", instance.get("root_disk")), ("ephemeral_bytes", instance.get("ephemeral_disk"))):
        change = (plan.get("changes") or {}).get(key)
        if change and disk:
            out.append({"target": disk["target"], "path": disk["path"], "before": int(change[0]),
                        "after": int(change[1]), "role": "root" if key == "root_bytes" else "ephemeral"})
    return out


def refusals(model, root, state, changes, running_vcpus=None):
    """Why this change cannot be made to the running VM live; [] when it can. `running_vcpus`: what
    QEMU runs now, when the host said (after a live revert it may run more than its definition)."""
    why = []
    if state != "running":
        why.append("the VM is %s: only a running VM is resized live" % (state or "in an unknown state"))
    elif running_vcpus is not None and running_vcpus != model["vcpus"]:
        why.append("the running VM has %d vCPUs, its definition %d (it gets the definition's at its next restart)"
                   % (running_vcpus, model["vcpus"]))
    if "vcpus" in changes:
        old, new = changes["vcpus"]
        if new < old:
            why.append("fewer vCPUs (%d -> %d): vCPUs are not taken away from a running guest" % (old, new))
        elif new > model["max_vcpus"]:
            why.append("%d vCPUs exceed the VM's hot-plug ceiling of %d (<vcpu>)" % (new, model["max_vcpus"]))
    if "memory_mb" in changes:
        old, new = changes["memory_mb"]
        if new < old:
            why.append("less memory (%d -> %d MiB): memory is not taken away from a running guest" % (old, new))
        elif not balloon(root):
            why.append("memory %d -> %d MiB: the VM has no memory balloon (<memballoon model='none'>)" % (old, new))
        elif new > model["max_memory_mb"]:
            why.append("%d MiB of memory exceed the VM's ceiling of %d MiB (<memory>)" % (new, model["max_memory_mb"]))
    if "swap_bytes" in changes:
        why.append("the swap disk changes size: it is made anew, which needs the VM off")
    return why


def agent_channel(root):
    """Whether the domain has a QEMU guest agent channel (the guest may or may not run the agent)."""
    return any(t.get("name") == "org.qemu.guest_agent.0" for t in root.findall("./devices/channel/target"))


def step_texts(before, after, disks, timeout, agent=False):
    """What a live resize does, in order (the controller's plan and the host's are the same text).
    Memory first, and proved from the guest, before the vCPUs: a guest that does not take it gets
    it back before anything that cannot be undone live (a vCPU the guest has onlined) happened."""
    out = []
    if after["memory_mb"] != before["memory_mb"]:
        out.append(("memory", "memory %d -> %d MiB (balloon, in the running VM and its definition)"
                    % (before["memory_mb"], after["memory_mb"])))
        out.append(("memory-taken", "wait up to %ds for the guest's balloon driver to reach %d MiB"
                    % (timeout, after["memory_mb"])))
    if after["vcpus"] != before["vcpus"]:
        out.append(("vcpus", "vCPUs %d -> %d (hot-plug, in the running VM and its definition)"
                    % (before["vcpus"], after["vcpus"])))
        out.append(("vcpus-taken", ("wait up to %ds for the guest to have %d vCPUs online (asked through its guest "
                                    "agent)" if agent else "wait up to %ds for QEMU to run %d vCPUs (no guest agent "
                                    "channel: the guest onlines them itself, unchecked)") % (timeout, after["vcpus"])))
    for d in disks:
        out.append(("disk:" + d["target"], "%s disk %s %s -> %s when the resize is confirmed (grown in place, "
                                           "live; until then a revert has nothing to undo there)"
                    % (d["role"], d["target"], _size(d["before"]), _size(d["after"]))))
    return out


def decide(instance, plan, mode="auto", timeout=60, host_reasons=None, target_host=None, source=None):
    """Which path a resize takes, and why: {path: live|cold, why: [..], steps: [..], disks: [..]}.

    `live` when the VM runs, the change fits its hot-plug ceilings and its host (host_reasons is
    what the scheduler said of the current host for the increase); else `cold`. resize_mode=live
    refuses what cannot be done live (nothing is changed); resize_mode=cold never goes live."""
    if mode not in MODES:
        raise ValidationError("resize_mode must be one of %s, got %r" % (", ".join(MODES), mode))
    name = instance.get("name")
    if mode == "cold":
        return {"path": "cold", "why": ["resize_mode=cold"], "steps": [], "disks": []}
    root = parse_xml(instance["xml"])
    model = model_from_xml(instance["xml"])
    changes = plan.get("changes") or {}
    why = refusals(model, root, instance.get("state"), changes, instance.get("running_vcpus"))
    if target_host and source and target_host != source:
        why.append("resize_target_host is %s, another host: a move is cold" % target_host)
    why += ["the VM's host %s cannot take the increase: %s" % (source, r) for r in host_reasons or []]
    disks = live_disks(instance, plan)
    if why:
        if mode == "live":
            raise ValidationError("VM %s cannot be resized live: %s" % (name, "; ".join(why)), domain=name,
                                  hint="nothing was changed; resize_mode=auto resizes it cold instead (with a restart)")
        return {"path": "cold", "why": why, "steps": [], "disks": []}
    before = {"vcpus": model["vcpus"], "memory_mb": model["memory_mb"]}
    after = {"vcpus": plan["after"]["vcpus"], "memory_mb": plan["after"]["memory_mb"]}
    return {"path": "live", "why": ["the VM runs and the change fits its hot-plug ceilings (%d vCPUs, %d MiB) "
                                    "and its host" % (model["max_vcpus"], model["max_memory_mb"])],
            "steps": [t for _n, t in step_texts(before, after, disks, timeout, agent_channel(root))], "disks": disks}


CEILING_AUTO = "auto"


MAX_VCPUS = 255  # what QEMU's x86 machines take without an IOMMU with extended interrupts
AUTO_MULTIPLE = 2  # auto never goes beyond twice the new size


def _ceiling(value, key, flavor, flavors, cap, what, lower_to_fit=None):
    if value in (None, "", CEILING_AUTO):
        fitting = [f[key] for f in flavors if f[key] <= min(cap, AUTO_MULTIPLE * flavor[key])]
        return min(max([flavor[key]] + fitting), MAX_VCPUS if key == "vcpus" else cap)
    try:
        number = int(value)
        if isinstance(value, bool) or number != float(value) or number < 0:
            raise ValueError
    except (TypeError, ValueError):
        raise ValidationError("%s must be auto, 0 or a whole number, got %r" % (what, value))
    if number == 0:
        return flavor[key]
    if number < flavor[key]:
        raise ValidationError("%s=%d is below the flavor's %d" % (what, number, flavor[key]),
                              hint="set it to at least %d, to auto, or to 0 (no ceiling)" % flavor[key])
    # More vCPUs than the host has CPUs is overcommit, which the scheduler's ratio governs; more than
    # a VM can have, or more memory than the host has, would only fail when the VM starts.
    limit = MAX_VCPUS if key == "vcpus" else cap
    if number > limit and lower_to_fit is not None:
        # A migration keeps the VM's ceilings: one the destination cannot carry is lowered, and says so.
        lower_to_fit.append("the %s hot-plug ceiling is lowered from %d to %d: %s" % (
            "vCPU" if key == "vcpus" else "memory", number, limit,
            "a VM can have no more here" if key == "vcpus" else "the destination has %d MiB" % limit))
        return limit
    if number > limit:
        where = "a VM can have here" if key == "vcpus" else "the destination has, in MiB"
        raise ValidationError("%s=%d is more than %s (%d)" % (what, number, where, limit),
                              hint="set it to at most %d, or to auto" % limit)
    return number


def ceilings(xml, flavor, flavors, host, max_vcpus=CEILING_AUTO, max_memory_mb=CEILING_AUTO, lower_to_fit=False):
    """The hot-plug ceilings a cold resize writes into the new definition, so that the next upsize
    can be live: {vcpus, memory_mb, warnings}. `auto` is the largest flavor that fits the
    destination (its CPUs, its memory) and is at most twice the new size, never below the new size;
    0 is none; a number is that.
    What is allocated (claims, the scheduler) stays the flavor's size: the ceilings cost nothing
    until used. None where the definition could not carry one (a CPU topology or NUMA cells, which
    libvirt ties to the maximum; no memory balloon). lower_to_fit (a migration keeping the VM's own
    ceilings): a number above what the destination allows is lowered to it, with a warning."""
    flavor = normalize_flavor(flavor, flavor.get("name"))
    known = []
    for key, value in sorted((flavors or {}).items()):
        try:
            known.append(normalize_flavor(value, key))
        except ValidationError:
            continue  # a flavor nobody asked for is not this resize's business (lookup_flavor checks the one asked)
    warnings = []
    lowered = warnings if lower_to_fit else None
    vcpus = _ceiling(max_vcpus, "vcpus", flavor, known, int(host.get("cpus") or flavor["vcpus"]), "resize_max_vcpus",
                     lowered)
    memory = _ceiling(max_memory_mb, "memory_mb", flavor, known, int(host.get("memory_mb") or flavor["memory_mb"]),
                      "resize_max_memory_mb", lowered)
    root = parse_xml(xml) if xml else None
    if root is not None:
        numa = root.find("cpu/numa") is not None
        if vcpus > flavor["vcpus"] and (numa or root.find("cpu/topology") is not None):
            warnings.append("no vCPU hot-plug ceiling: the VM's %s ties the maximum to its vCPUs; the next vCPU "
                            "change is cold" % ("NUMA cells" if numa else "<cpu><topology>"))
            vcpus = flavor["vcpus"]
        why = "NUMA cells" if numa else ("no memory balloon" if not balloon(root) else whole_memory(root))
        if memory > flavor["memory_mb"] and why:
            warnings.append("no memory ceiling: the VM has %s; the next memory change is cold" % why)
            memory = flavor["memory_mb"]
    return {"vcpus": vcpus, "memory_mb": memory, "warnings": warnings}


# ------------------------------------------------------------------------------------------------
# on the host


def _running_size(dom):
    """What the running domain has: the vCPUs QEMU runs and the balloon's actual size (KiB), as the
    guest's driver last reported it (libvirt's info() says the same)."""
    vcpus = dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE)
    actual = dom.memoryStats().get("actual")
    return {"vcpus": vcpus, "actual_kib": actual}


def _capacity_check(params, name, host, increase):
    from .facts import gather  # facts imports much of the package; only the host side needs it
    hv = gather({"uri": params["uri"], "state_dir": params["state_dir"],
                 "instances_path": params["instances_path"], "instance": None})["hypervisor"]
    limits = {k: params[k] for k in ("cpu_allocation_ratio", "ram_allocation_ratio", "disk_allocation_ratio",
                                     "reserved_host_memory_mb") if params.get(k) is not None}
    reasons = capacity_reasons(dict(hv, **limits), increase)
    if reasons:
        raise ValidationError("this host cannot take the increase: %s" % "; ".join(reasons), domain=name, host=host,
                              hint="nothing was changed; resize_mode=auto resizes it cold (elsewhere)")


def after_xml(xml, vcpus, memory_mb):
    """The definition with the new size (for diff and check mode): what libvirt writes itself."""
    root = parse_xml(xml)
    vcpu = root.find("vcpu")
    if int(vcpu.text) == vcpus:
        vcpu.attrib.pop("current", None)
    else:
        vcpu.set("current", str(vcpus))
    cur = root.find("currentMemory")
    if cur is None:
        cur = etree.Element("currentMemory")
        root.insert(list(root).index(root.find("memory")) + 1, cur)
    cur.set("unit", "KiB")
    cur.text = str(memory_mb * KIB)
    return normalize(etree.tostring(root, encoding="unicode"))


def apply(params, check_mode):
    """virt_live_resize: resize the running VM in place, as a plan of reversible steps. A refusal
    (ValidationError) comes before anything was written: its details say `recorded: false`, so the
    role's rescue knows there is nothing of this run to roll back."""
    try:
        return _apply_locked(params, check_mode)
    except ValidationError as exc:
        exc.details = dict(exc.details or {}, recorded=False)
        raise


def _apply_locked(params, check_mode):
    name = check_domain_name(params["instance"])
    mid = state_mod.check_id(params["migration_id"])
    host = hostname()
    new = normalize_flavor(params["flavor"], params["flavor"].get("name"))
    if int(params["verify_timeout"]) < 1:
        raise ValidationError("verify_timeout must be at least 1 second, got %s" % params["verify_timeout"],
                              domain=name, host=host)
    with Connection(params["uri"]) as c:
        dom = c.find(name)
        if dom is None:
            raise ValidationError("the VM is not defined on this host", domain=name, host=host)
        if dom.UUIDString() != params["uuid"]:
            raise ValidationError("the VM here has UUID %s, not %s" % (dom.UUIDString(), params["uuid"]),
                                  domain=name, host=host)
        lock = state_mod.vm_lock(params["state_dir"], params["uuid"], "live resize", mid, name, host) \
            if not check_mode else contextlib.nullcontext()
        with lock:
            return _apply(params, check_mode, dom, name, mid, host, new)


def _check_disks(dom, model, live_model, disks, name, host):
    """L1: each disk to grow is one the VM's definition and its running domain both have as that
    target, a disk that moves with it (a writable image file), at the planned size, growing to a
    whole number of sectors."""
    defined = {d["target"]: d for d in copy_disks(model) if d.get("target")}
    running = {d["target"]: d for d in copy_disks(live_model) if d.get("target")}
    for d in disks:
        mine = defined.get(d.get("target"))
        if not mine or mine["path"] != d.get("path") or (running.get(d["target"]) or {}).get("path") != d["path"]:
            raise ValidationError("disk %s (%s) is not a disk of the VM here [rule L1, %s]"
                                  % (d.get("target"), d.get("path"), SECURITY_DOC), domain=name, host=host)
        capacity = dom.blockInfo(mine["path"])[0]
        if capacity != int(d["before"]) or int(d["after"]) <= capacity or int(d["after"]) % 512:
            raise ValidationError("disk %s is %d bytes, the plan started from %d and grows it to %d (whole sectors) "
                                  "[rule L1, %s]" % (d["target"], capacity, int(d["before"]), int(d["after"]),
                                                     SECURITY_DOC),
                                  domain=name, host=host, hint="nothing was changed; run the resize again")


def _apply(params, check_mode, dom, name, mid, host, new):
    rec = get_record(dom)
    if rec and rec.get("id") == mid and rec.get("status") == "finished":
        return {"changed": False, "migration_id": mid, "migration": rec, "steps": [], "msg": "already resized live",
                "guest": {}}
    if record_mod.is_open(rec):
        raise ValidationError("migration %s of this VM is open (status %s)" % (rec.get("id"), rec.get("status")),
                              domain=name, host=host, hint="confirm or revert it first")
    if not dom.isActive():
        raise ValidationError("the VM is not running; a live resize needs a running VM", domain=name, host=host,
                              hint="nothing was changed; resize_mode=auto resizes it cold")
    xml = inactive_xml(dom)
    model = model_from_xml(xml)
    root = parse_xml(xml)
    old = params["old_flavor"] or {}
    running = _running_size(dom)
    live_model = model_from_xml(dom.XMLDesc(0))
    if (live_model["max_vcpus"], live_model["max_memory_mb"]) != (model["max_vcpus"], model["max_memory_mb"]):
        raise ValidationError("the running VM's ceilings (%d vCPUs, %d MiB) are not its definition's (%d vCPUs, %d MiB)"
                              % (live_model["max_vcpus"], live_model["max_memory_mb"], model["max_vcpus"],
                                 model["max_memory_mb"]), domain=name, host=host,
                              hint="nothing was changed; they apply at its next restart (or resize it cold)")
    # Compare and set: the VM is still what the controller planned from, in its definition and live
    # (its balloon's actual size is the guest's business: a guest that does not take the change
    # fails the wait below, and the change is undone).
    seen = {"vcpus": model["vcpus"], "memory_mb": model["memory_mb"], "running vcpus": running["vcpus"]}
    want = {"vcpus": old.get("vcpus"), "memory_mb": old.get("memory_mb"), "running vcpus": old.get("vcpus")}
    if seen != want:
        raise ValidationError("the VM changed since the plan was made: it has %s, the plan started from %s"
                              % (seen, want), domain=name, host=host, hint="nothing was changed; run the resize again")
    disks = params["disks"] or []
    _check_disks(dom, model, live_model, disks, name, host)
    changes = {}
    if new["vcpus"] != model["vcpus"]:
        changes["vcpus"] = [model["vcpus"], new["vcpus"]]
    if new["memory_mb"] != model["memory_mb"]:
        changes["memory_mb"] = [model["memory_mb"], new["memory_mb"]]
    why = refusals(model, root, "running", changes, running["vcpus"])
    if why:
        raise ValidationError("the VM cannot be resized live: %s" % "; ".join(why), domain=name, host=host,
                              hint="nothing was changed; resize_mode=auto resizes it cold")
    before = {"vcpus": model["vcpus"], "memory_mb": model["memory_mb"]}
    after = {"vcpus": new["vcpus"], "memory_mb": new["memory_mb"]}
    before_kib = _current_kib(root)
    timeout = int(params["verify_timeout"])
    agent = agent_channel(root)
    texts = step_texts(before, after, disks, timeout, agent)
    increase = {"vcpus": max(after["vcpus"] - before["vcpus"], 0),
                "memory_mb": max(after["memory_mb"] - before["memory_mb"], 0),
                "disk_bytes": sum(int(d["after"]) - int(d["before"]) for d in disks)}
    diff = {"before": normalize(xml), "after": after_xml(xml, new["vcpus"], new["memory_mb"]),
            "before_header": "%s (definition)" % name, "after_header": "%s (definition, resized live)" % name}
    result = {"changed": True, "migration_id": mid, "steps": [t for _n, t in texts], "diff": diff,
              "before": before, "after": after}
    if check_mode:
        _capacity_check(params, name, host, increase)  # reads only
        return result
    rec = record_mod.new_record(name, params["uuid"], host, host, dict(old, **before), new, migration_id=mid,
                                note="live resize on %s" % host)
    rec.update(mode="live", same_host=True, old_power_state="running", old_autostart=False,
               original_xml=record_mod.without_record(xml),
               live_before=dict(before, memory_kib=before_kib), applied=[],
               pending_disks=[{"target": d["target"], "path": d["path"], "bytes": int(d["after"])} for d in disks])
    rec = record_mod.transition(rec, "migrating", "applying: %s" % "; ".join(t for _n, t in texts))
    with state_mod.locked(params["state_dir"]):
        if os.path.lexists(state_mod.migration_dir(params["state_dir"], mid)):
            raise ValidationError("migration %s already exists here" % mid, domain=name, host=host,
                                  hint="nothing was changed; use a new migration id for a new resize")
        # Under the host's lock: the room is checked and claimed (the claim counts until the
        # definition holds the new size and the record is finished), so no other resize here can
        # take it while the guest is given time to take the change.
        _capacity_check(params, name, host, increase)
        set_record(dom, rec)
        state_mod.write_record(params["state_dir"], dict(rec, claim=dict(increase, disk_bytes=0),
                                                         original_xml=None))
    try:
        warnings = []
        steps = _steps(dom, name, host, dict(before, memory_kib=before_kib), after, timeout, agent, warnings)
        outcome = plan_mod.execute([s for s in steps if not s.name.startswith("disk:")],
                                   on_done=lambda s: _note(dom, rec, s))
        rec = get_record(dom) or rec
        if not outcome["ok"]:
            rec = record_mod.transition(rec, "error", "live resize failed at %s: %s"
                                        % (outcome["failed"], outcome["error"]))
            # Closed only when everything was put back: otherwise the record stays open (error) and
            # recover.yml's rollback (live.revert) puts the original definition back.
            rec = dict(rec, rolled_back=not outcome["undo_failed"], left=outcome["left"])
            if rec["rolled_back"]:
                rec.pop("original_xml", None)  # the definition is the original again
            rec["history"] = rec["history"] + [{"at": record_mod.now(), "status": "error", "note": "rolled back: %s"
                                                % ("; ".join(outcome["undone"]) or "nothing was applied")}]
            set_record(dom, rec)
            msg = outcome["error"].msg if isinstance(outcome["error"], ResizeError) else str(outcome["error"])
            raise ResizeError("live resize failed at step %s: %s; undone: %s%s"
                              % (outcome["failed"], msg, "; ".join(outcome["undone"]) or "nothing",
                                 "; left: %s" % "; ".join(outcome["left"]) if outcome["left"] else ""),
                              domain=name, host=host,
                              hint=None if not outcome["undo_failed"] else
                              "run playbooks/recover.yml -e instance=%s to put the original definition back" % name,
                              details={"undone": outcome["undone"], "left": outcome["left"],
                                       "failed": outcome["failed"]})
        rec = record_mod.transition(rec, "post-migrating", "applied")
        rec = record_mod.transition(rec, "finished", "the guest took the memory; QEMU runs %d vCPUs%s"
                                    % (after["vcpus"], "; disks grow when the resize is confirmed" if disks else ""))
        set_record(dom, rec)
    finally:
        state_mod.remove(params["state_dir"], mid)  # the claim: the definition counts the new size now
    result.update(migration=rec, guest=_seen(dom), domain=after)
    if warnings:
        result["warnings"] = warnings
    return result


def _current_kib(root):
    cur = root.find("currentMemory")
    node = cur if cur is not None else root.find("memory")
    return to_bytes(node.text, node.get("unit", "KiB")) // KIB


def _note(dom, rec, step):
    rec["applied"] = list(rec.get("applied") or []) + [step.name]
    set_record(dom, rec)


def _seen(dom):
    """What the running VM has now, as far as libvirt can still tell (it may have stopped)."""
    try:
        return _running_size(dom)
    except libvirt.libvirtError as exc:
        return {"error": str(exc)}


def _libvirt(call, what, name):
    try:
        return call()
    except libvirt.libvirtError as exc:
        raise libvirt_error(exc, what, domain=name)


def _steps(dom, name, host, before, after, timeout, agent=False, warnings=None):
    both = libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_AFFECT_CONFIG
    texts = dict(step_texts(before, after, [], timeout, agent))
    steps = []
    if "memory" in texts:
        def memory_back():
            # Exactly the size it had (KiB), in the definition; the running guest is given time to
            # give it back, and what it keeps is said.
            _libvirt(lambda: dom.setMemoryFlags(before["memory_kib"], libvirt.VIR_DOMAIN_AFFECT_CONFIG),
                     "cannot set the memory of the definition back", name)
            return _balloon_back(dom, name, before["memory_kib"], min(timeout, 30)) if dom.isActive() else None
        steps.append(plan_mod.Step(
            "memory", texts["memory"],
            apply=lambda: _libvirt(lambda: dom.setMemoryFlags(after["memory_mb"] * KIB, both),
                                   "cannot set the memory balloon", name),
            undo=memory_back, undo_failed_apply=True))
        steps.append(plan_mod.Step("memory-taken", texts["memory-taken"],
                                   apply=lambda: _wait(dom, name, host, "memory", after, timeout)))
    if "vcpus" in texts:
        def vcpus_back():
            # Hot-unplug is left to a restart: on libvirt 9.0 with QEMU 7.2 an unplug the guest takes
            # slowly leaves libvirt's count wrong (tests/testbed/README.md). The definition goes back.
            _libvirt(lambda: dom.setVcpusFlags(before["vcpus"], libvirt.VIR_DOMAIN_AFFECT_CONFIG),
                     "cannot set the vCPUs of the definition back", name)
            running = dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE) if dom.isActive() else 0
            if running > before["vcpus"]:
                return ("the running VM keeps %d vCPUs until it restarts (its definition has %d again)"
                        % (running, before["vcpus"]))
            return None
        steps.append(plan_mod.Step(
            "vcpus", texts["vcpus"],
            apply=lambda: _libvirt(lambda: dom.setVcpusFlags(after["vcpus"], both), "cannot hot-plug vCPUs", name),
            undo=vcpus_back, undo_failed_apply=True))

        def vcpus_taken():
            _wait(dom, name, host, "vcpus", after, timeout)
            note = _wait_agent(dom, name, host, after, timeout) if agent else None
            if note and warnings is not None:
                warnings.append(note)
        steps.append(plan_mod.Step("vcpus-taken", texts["vcpus-taken"], apply=vcpus_taken))
    return steps


def _wait(dom, name, host, what, after, timeout, clock=time.monotonic, sleep=time.sleep):
    """The guest took the change: the balloon's actual size (what the guest's driver gave back or
    took) is the new memory; QEMU runs the new vCPUs."""
    last = {}

    def taken():
        last.update(_running_size(dom))
        if what == "memory":
            return last["actual_kib"] == after["memory_mb"] * KIB
        return last["vcpus"] == after["vcpus"]

    try:
        wait_until(taken, timeout, interval=0.25, what="the guest", clock=clock, sleep=sleep)
    except WaitTimeout:
        if what == "memory":
            raise ResizeError("the guest did not take the new memory within %ds: its balloon holds %d MiB, not %d "
                              "MiB (no balloon driver in the guest?)"
                              % (timeout, (last.get("actual_kib") or 0) // KIB, after["memory_mb"]),
                              domain=name, host=host)
        raise ResizeError("QEMU runs %d vCPUs, not %d, after %ds" % (last.get("vcpus") or 0, after["vcpus"], timeout),
                          domain=name, host=host)
    except libvirt.libvirtError as exc:
        raise libvirt_error(exc, "cannot see what the guest has", domain=name)


def _wait_agent(dom, name, host, after, timeout, clock=time.monotonic, sleep=time.sleep):
    """Through the guest agent: the guest has the new vCPUs online (asked once to online those it
    has not). An agent that answers and does not get there fails the step; one that does not answer
    at all leaves it unchecked, which the returned note says."""
    seen = {"answered": False, "asked": False, "online": None, "error": None}

    def online():
        try:
            info = dom.guestVcpus()
        except libvirt.libvirtError as exc:
            seen["error"] = exc.get_error_message()
            return False
        if not info:  # the bindings say nothing when the agent is not connected
            return False
        seen["answered"] = True
        on, known = _cpu_set(info.get("online", "")), _cpu_set(info.get("vcpus", ""))
        seen["online"] = len(on)
        if len(on) >= after["vcpus"]:
            return True
        if not seen["asked"]:
            seen["asked"] = True
            offline = sorted(known - on)[:after["vcpus"] - len(on)]
            if offline:
                _libvirt(lambda: dom.setGuestVcpus(_cpu_text(offline), 1), "cannot online vCPUs in the guest", name)
        return False

    try:
        wait_until(online, timeout, interval=0.5, what="the guest's vCPUs", clock=clock, sleep=sleep)
        return None
    except WaitTimeout:
        if seen["answered"]:
            raise ResizeError("the guest has %d vCPUs online, not %d, after %ds (its guest agent says so)"
                              % (seen["online"] or 0, after["vcpus"], timeout), domain=name, host=host)
        return ("the guest agent did not answer (%s): the guest's view of its %d vCPUs is not checked"
                % (seen["error"] or "no reply", after["vcpus"]))


def grow_pending(dom, rec, check_mode):
    """Confirm of a live resize: grow the disks it planned (root, ephemeral), in place - live with
    blockResize while the VM runs, with qemu-img while it is off - and check the new size. Disks
    never change before the resize is confirmed. Idempotent: a disk already at its size is left."""
    name = rec["instance"]
    actions = []
    model = model_from_xml(inactive_xml(dom))
    by_target = {d["target"]: d for d in model["disks"] if d.get("target")}
    for d in rec.get("pending_disks") or []:
        mine = by_target.get(d["target"])
        if not mine or mine["path"] != d["path"]:
            raise ValidationError("disk %s (%s) of the record is not the VM's any more; not grown"
                                  % (d["target"], d["path"]), domain=name, host=hostname())
        size = dom.blockInfo(mine["path"])[0] if dom.isActive() else \
            int(storage.image_info(mine["path"], mine["format"])["virtual_size"])
        if size >= int(d["bytes"]):
            continue
        actions.append("grow disk %s to %s" % (d["target"], _size(int(d["bytes"]))))
        if check_mode:
            continue
        if dom.isActive():
            _libvirt(lambda d=d: dom.blockResize(d["target"], int(d["bytes"]), libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES),
                     "cannot grow disk %s" % d["target"], name)
            size = dom.blockInfo(mine["path"])[0]
        else:
            storage.grow(mine["path"], mine["format"], int(d["bytes"]))
            size = int(storage.image_info(mine["path"], mine["format"])["virtual_size"])
        if size != int(d["bytes"]):
            raise ResizeError("disk %s is %d bytes after growing it to %d" % (d["target"], size, int(d["bytes"])),
                              domain=name, host=hostname())
    return actions


def revert(params, check_mode, c, dom, rec):
    """Undo a live resize in place (revert, or the rollback of a run that stopped): the balloon's
    target and the original definition back (vCPUs hot-plugged stay in the running guest until it
    restarts, named in `left`), the record to `reverting` (a confirm is refused from here on), a
    claim of a run that was killed released. The source step (settle.revert_source) closes it."""
    name = rec["instance"]
    host = hostname()
    mid = rec["id"]
    claim = os.path.isdir(state_mod.migration_dir(params["state_dir"], mid))
    if rec.get("rolled_back") or rec.get("restored"):
        if claim and not check_mode:
            state_mod.remove(params["state_dir"], mid)
        return {"changed": claim, "actions": ["release claim"] if claim else [], "left": rec.get("left") or [],
                "host": host}
    before = rec.get("live_before") or {}
    active = dom.isActive()
    defined = model_from_xml(inactive_xml(dom))
    actions, left = [], []
    if active and defined["memory_mb"] * KIB != before.get("memory_kib"):
        actions.append("memory back to %d MiB (balloon)" % (before["memory_kib"] // KIB))
    actions.append("restore the definition of %s (%d vCPUs, %d MiB)"
                   % (name, before.get("vcpus", 0), before.get("memory_mb", 0)))
    running = dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE) if active else 0
    if running > before.get("vcpus", 0):
        left.append("the running VM keeps %d vCPUs until it restarts (its definition has %d again)"
                    % (running, before["vcpus"]))
    if claim:
        actions.append("release claim")
    if check_mode:
        return {"changed": True, "actions": actions, "left": left, "host": host}
    # The record first: from here on a confirm is refused, whatever stops this revert half-way.
    if rec["status"] not in ("reverting", "error"):
        rec = record_mod.transition(rec, "reverting", params.get("reason") or "reverted")
        set_record(dom, rec)
    if active:  # the balloon's target back; the guest gives the memory back as it can
        note = _balloon_back(dom, name, before["memory_kib"], 30)
        if note:
            left.append(note)
    restored = dict(rec, restored=True, left=left)
    restored.pop("original_xml", None)  # it is the definition again
    _libvirt(lambda: c.conn.defineXML(record_mod.embed(rec["original_xml"], restored)),
             "cannot restore the original definition", name)
    if claim:
        state_mod.remove(params["state_dir"], mid)
    return {"changed": True, "actions": actions, "left": left, "host": host}


def _balloon_back(dom, name, kib, timeout):
    """Set the running VM's balloon target back to `kib` and give the guest `timeout` seconds to
    reach it; what it still holds after that, as a note (None when it gave it back)."""
    _libvirt(lambda: dom.setMemoryFlags(kib, libvirt.VIR_DOMAIN_AFFECT_LIVE), "cannot set the memory balloon back",
             name)
    try:
        wait_until(lambda: _running_size(dom)["actual_kib"] in (kib, None), timeout, interval=0.25, what="the balloon")
        return None
    except (WaitTimeout, libvirt.libvirtError):
        got = _seen(dom).get("actual_kib")
        return ("the guest still holds %s MiB of memory (its definition has %d MiB again; it gives it back as it "
                "can, or at its next restart)" % (got // KIB if got else "?", kib // KIB))
