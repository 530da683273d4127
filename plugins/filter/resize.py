# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side decisions of the resize role: where the VM is, what changes, where it goes.

Filters: resize_locate(results, instance), resize_flavor(flavors, name), resize_plan(instance, flavor),
resize_schedule(results, source, instance, flavor, host_options, target_host, allow_same_host, weights).

Pure Python over the results of hypervisor.resize.virt_host_facts; the rules are the same
module_utils the hypervisors use, so the controller and the destination cannot disagree.
"""

from __future__ import annotations

import datetime

from ansible.errors import AnsibleFilterError

from ansible_collections.hypervisor.resize.plugins.module_utils import _policy, batch, live, parts, schedule
from ansible_collections.hypervisor.resize.plugins.module_utils import record as record_mod
from ansible_collections.hypervisor.resize.plugins.module_utils.domain import (
    check_domain_name,
    copy_disks,
    model_from_xml,
    moved_files,
    parse_xml,
    resized_model,
    role_disk,
    root_disk,
)
from ansible_collections.hypervisor.resize.plugins.module_utils.errors import ResizeError
from ansible_collections.hypervisor.resize.plugins.module_utils.flavor import (
    capacity_reasons,
    current_size,
    lookup_flavor,
    resize_plan,
)


def _wrap(func):
    def inner(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except ResizeError as exc:
            raise AnsibleFilterError(exc.full_message())
    inner.__name__ = func.__name__
    inner.__doc__ = func.__doc__
    return inner


def _facts(results):
    """Accept {host: module result} or {host: hypervisor facts}."""
    out = {}
    for host, res in (results or {}).items():
        if not isinstance(res, dict):
            raise AnsibleFilterError("facts of host %s are not a mapping" % host)
        if res.get("failed") or res.get("unreachable"):
            out[host] = {"failed": res.get("msg") or "unreachable"}
            continue
        out[host] = res
    return out


def resize_locate(results, instance):
    """{host, instance} for the single host where `instance` is defined and not a finished copy."""
    check_domain_name(instance)
    found = []
    for host, res in sorted(_facts(results).items()):
        if res.get("failed"):
            continue
        inst = res.get("instance")
        if inst:
            if inst.get("name") != instance:
                # A host answers for the VM asked about, not another one (C2).
                raise ResizeError("host %s answered for VM %s with a domain named %r"
                                  % (host, instance, inst.get("name")),
                                  hint="nothing was changed; look at that host (docs/security.md, rule C2)")
            found.append((host, inst))
    if not found:
        down = sorted(h for h, r in _facts(results).items() if r.get("failed"))
        raise ResizeError("VM %s is not defined on any hypervisor (%s)%s"
                          % (instance, ", ".join(sorted(_facts(results))) or "no hosts",
                             "; unreachable or failed: %s" % ", ".join(down) if down else ""),
                          hint="check the name with: virsh list --all")
    _refuse_busy(found, instance)
    recs = [(h, (i.get("migration") or {})) for h, i in found]
    open_ids = sorted(set(r.get("id") for _host, r in recs if record_mod.is_open(r)))
    if open_ids:
        waiting = all(r.get("status") in ("finished", "post-migrating") for _h, r in recs if record_mod.is_open(r)) \
            and any(r.get("status") == "finished" for _h, r in recs)
        raise ResizeError("VM %s is in the middle of a resize (migration %s, on %s)"
                          % (instance, ", ".join(open_ids), ", ".join("%s: %s" % (h, r.get("status"))
                                                                      for h, r in recs)),
                          hint="confirm or revert it first (playbooks/confirm.yml or playbooks/revert.yml)"
                          if waiting else
                          ("it did not end: run playbooks/recover.yml -e instance=%s (puts its definition back)"
                           % instance) if any(r.get("mode") == "live" for _h, r in recs if record_mod.is_open(r)) else
                          "it did not end: run playbooks/recover.yml -e instance=%s (rolls it back to its source; "
                          "-e action=resume finishes it instead)" % instance)
    if len(found) > 1:
        raise ResizeError("VM %s is defined on more than one hypervisor: %s"
                          % (instance, ", ".join(h for h, _inst in found)),
                          hint="undefine the stale copy; a resize needs exactly one source")
    host, inst = found[0]
    return {"host": host, "instance": _from_own_parse(inst)}


def _from_own_parse(inst):
    """The instance with its model, disks, NICs and boot files parsed here from the source's XML,
    not as the source reported them: what the controller reviews is what it renders (the source
    only contributes sizes, per disk path)."""
    if not inst.get("xml"):
        return inst
    model = model_from_xml(inst["xml"])
    keys = ("virtual_size", "allocation", "file_size", "backing_file", "data_file")
    sizes = {d.get("path"): {k: d.get(k) for k in keys} for d in inst.get("disks") or [] if d.get("path")}
    disks = [dict(d, **sizes.get(d["path"], {})) for d in model["disks"]]
    if model["name"] != inst.get("name") or model["uuid"] != inst.get("uuid"):
        raise ResizeError("the source's report of VM %s does not match its own definition" % inst.get("name"))
    return dict(inst, model=model, disks=disks, copy_disks=copy_disks(disks), moved_files=moved_files(disks),
                root_disk=root_disk(disks),
                ephemeral_disk=role_disk(disks, "ephemeral"), swap_disk=role_disk(disks, "swap"),
                interfaces=model["interfaces"], boot_files=model["boot_files"], vcpus=model["vcpus"],
                memory_mb=model["memory_mb"])


def _move_review(instance, allow):
    """docs/security.md, as the controller can apply it: the VM's own refusals for a move to
    another host, and its host paths (checked per host against that host's roots)."""
    if not instance.get("xml"):
        return [], []
    rv = _policy.review_domain(parse_xml(instance["xml"]), allow, source=True)
    return [text for _rule, text in rv.refusals] + parts.uncarried(instance), rv.paths


def _path_reasons(paths, hv):
    roots = hv.get("storage_roots") or []
    out = []
    for entry in paths:
        problem = _policy.lexical_problem(entry["path"], entry["kind"], roots)
        if problem:
            rule = "P2" if entry["kind"] in ("read", "emulator") else "P1"
            out.append("%s: %s %s [rule %s, %s]" % (entry["what"], entry["path"], problem, rule, _policy.SECURITY_DOC))
    return out


def _known(rec, results):
    return rec.get("source") in results and rec.get("dest") in results


def _refuse_busy(found, instance):
    """One operation per VM: refuse while any host says an operation holds the VM there."""
    busy = [(h, i["busy"]) for h, i in found if i.get("busy")]
    if busy:
        raise ResizeError("VM %s is busy: %s" % (instance, "; ".join(
            "%s runs %s of migration %s (pid %s, since %s)" % (h, b.get("operation"), b.get("migration_id") or "-",
                                                               b.get("pid"), b.get("since")) for h, b in busy)),
                          hint="only one operation per VM runs at a time: wait for it to end, then look again")


def resize_schedule(results, source, instance, flavor, host_options=None, target_host=None,
                    allow_same_host=False, weights=None, allow_host_access=None):
    """Filter and weigh hosts; returns {host, ranked, rejected: {host: [reasons]}}."""
    host_options = host_options or {}
    refusals, paths = _move_review(instance, allow_host_access or [])
    if refusals and not allow_same_host:
        raise ResizeError("VM %s cannot move to another host: %s" % (instance.get("name"), "; ".join(refusals)),
                          hint="nothing was changed (the rules: %s)" % _policy.SECURITY_DOC)
    weights = schedule.full_weights(weights)
    disk_bytes = sum(int(d.get("allocation") or 0) for d in instance.get("moved_files", instance["copy_disks"]))
    request = {"vcpus": flavor["vcpus"], "memory_mb": flavor["memory_mb"], "disk_bytes": disk_bytes}
    facts = _facts(results)
    vm_reasons = _vm_reasons(instance, facts, source, paths, refusals)
    current = {k: instance[k] for k in ("vcpus", "memory_mb") if k in instance}
    rejected, passed = {}, []
    for host, res in sorted(facts.items()):
        reasons = schedule.host_reasons(host, res, host_options.get(host) or {}, source=source, need=request,
                                        current=current, allow_same_host=allow_same_host, vm_reasons=vm_reasons)
        if reasons:
            rejected[host] = reasons
        else:
            passed.append((host, res.get("hypervisor") or {}))
    if target_host:
        if target_host not in facts:
            raise ResizeError("target host %s is not among the hypervisors (%s)"
                              % (target_host, ", ".join(sorted(facts))))
        if target_host in rejected:
            raise ResizeError("target host %s cannot take VM %s: %s"
                              % (target_host, instance.get("name"), "; ".join(rejected[target_host])))
        passed = [(h, hv) for h, hv in passed if h == target_host]
    ranked = sorted(passed, key=lambda item: (-schedule.weigh(item[1], weights), item[0]))
    if not ranked:
        raise ResizeError("no valid host for VM %s (%d vCPU, %d MiB): %s"
                          % (instance.get("name"), flavor["vcpus"], flavor["memory_mb"],
                             "; ".join("%s: %s" % (h, ", ".join(r)) for h, r in sorted(rejected.items()))
                             or "no hypervisors"))
    return {"host": ranked[0][0], "ranked": [h for h, _hv in ranked], "rejected": rejected, "request": request,
            "explain": ["%s: %s" % (h, "; ".join(r)) for h, r in sorted(rejected.items())]}


def _vm_reasons(instance, results, source, paths, refusals):
    """The VM-specific part of the scheduler's filter, as schedule.host_reasons calls it:
    vm_reasons(host, hv) -> [reasons]. To another host: the VM's refusals (alone, as
    schedule.Refusals), else its host paths against that host's roots and swtpm for an emulated TPM;
    on any host: the source's architecture, the VM's bridges and libvirt networks.

    results: {host: virt_host_facts result} (for the source's architecture); paths, refusals: from
    _move_review(instance, allow_host_access)."""
    res = (results or {}).get(source) or {}
    src_arch = None if schedule.failure(res) else (res.get("hypervisor") or {}).get("arch")
    tpm = bool(instance.get("xml")) and parts.emulated_tpm(parse_xml(instance["xml"]))
    nics = instance.get("interfaces") or []
    refused = schedule.Refusals(refusals or [])

    def vm_reasons(host, hv):
        if host != source and refused:
            return refused
        reasons = []
        if host != source:
            reasons += _path_reasons(paths, hv)
            if tpm and hv.get("swtpm") is False:
                reasons.append("no swtpm for the VM's emulated TPM (install swtpm there)")
        if src_arch and hv.get("arch") != src_arch:
            reasons.append("architecture %s differs from the source's %s" % (hv.get("arch"), src_arch))
        for nic in nics:
            src = nic.get("source") or {}
            if nic.get("type") == "bridge" and src.get("bridge") not in hv.get("bridges", []):
                reasons.append("bridge %s missing" % src.get("bridge"))
            if nic.get("type") == "network" and src.get("network") not in hv.get("networks", []):
                reasons.append("libvirt network %s missing" % src.get("network"))
        return reasons
    return vm_reasons


_limits = schedule.option_limits


HOST_OPTION_VARS = {
    "maintenance": "hypervisor_maintenance",
    "enabled": "hypervisor_enabled",
    "cpu_allocation_ratio": "hypervisor_cpu_allocation_ratio",
    "ram_allocation_ratio": "hypervisor_ram_allocation_ratio",
    "disk_allocation_ratio": "hypervisor_disk_allocation_ratio",
    "reserved_host_memory_mb": "hypervisor_reserved_host_memory_mb",
}


def resize_host_options(hosts, hostvars):
    """Per-host scheduler settings from host vars (hypervisor_maintenance, hypervisor_*_ratio, ...)."""
    out = {}
    for host in hosts:
        hv = hostvars[host]
        out[host] = {key: hv[var] for key, var in HOST_OPTION_VARS.items() if var in hv}
    return out


def resize_migration(results, instance):
    """The open migration of `instance`: {id, status, source, dest} from both hosts' records."""
    check_domain_name(instance)
    seen = {}
    found = []
    for host, res in sorted(_facts(results).items()):
        inst = None if res.get("failed") else res.get("instance")
        if inst:
            found.append((host, inst))
        rec = (inst or {}).get("migration")
        # A host speaks only for itself: a record that names neither it as source nor as
        # destination, or names a host outside the inventory, is not believed.
        if rec and rec.get("id") and host in (rec.get("source"), rec.get("dest")) \
                and rec.get("source") in results and rec.get("dest") in results:
            seen.setdefault(rec["id"], {})[host] = rec
    _refuse_busy(found, instance)
    for mid, hosts in sorted(seen.items()):
        source = dest = None
        for host, rec in hosts.items():
            if rec.get("dest") == host and rec.get("status") in ("finished", "confirming"):
                dest = host
            elif rec.get("source") == host and rec.get("status") in ("post-migrating", "migrating", "error",
                                                                     "reverting"):
                source = host
        if dest or source:
            any_rec = next(iter(hosts.values()))
            return {"id": mid, "source": source or any_rec.get("source"), "dest": dest or any_rec.get("dest"),
                    "status": {h: r.get("status") for h, r in hosts.items()}}
    raise ResizeError("VM %s has no resize waiting for confirm or revert" % instance,
                      hint="records seen: %s" % (", ".join("%s on %s: %s" % (m, h, r.get("status"))
                                                           for m, hs in seen.items() for h, r in hs.items())
                                                 or "none"))


def resize_recovery(results, instance, action="rollback"):
    """What recover.yml does for `instance`, from the records on the hosts that answered.

    The migration is the newest one any answering host holds open for the VM: in the VM's domain
    record (source and destination) or in a destination's migration directory (a claim made by
    prep). Returns {id, source, dest, status: {host: status}, answered: {source, dest}, action,
    steps: [...], instance (the source's facts, for rendering the definition again), new_flavor,
    old_power_state, msg}. Raises when the action cannot be done, saying why and what to do."""
    check_domain_name(instance)
    if action not in ("rollback", "resume"):
        raise ResizeError("action must be rollback or resume, got %r" % (action,))
    facts = _facts(results)
    found, recs = [], {}
    for host, res in sorted(facts.items()):
        if res.get("failed"):
            continue
        inst = res.get("instance")
        # A host speaks only for itself (C2): its domain's record must name it, a claim is a
        # destination's, and both ends must be hosts of the inventory.
        if inst:
            found.append((host, inst))
            rec = inst.get("migration") or {}
            if rec.get("id") and (record_mod.is_open(rec) or rec.get("status") == "error") \
                    and host in (rec.get("source"), rec.get("dest")) and _known(rec, results):
                recs.setdefault(rec["id"], {})[host] = ("domain", rec)
        for rec in (res.get("hypervisor") or {}).get("migrations") or []:
            if rec.get("instance") == instance and rec.get("id") and rec.get("dest") == host and _known(rec, results):
                recs.setdefault(rec["id"], {}).setdefault(host, ("claim", rec))
    _refuse_busy(found, instance)
    candidates = {mid: hosts for mid, hosts in recs.items()
                  if any(kind == "claim" or (record_mod.is_open(r)) for kind, r in hosts.values())}
    if not candidates:
        return {"id": None, "source": None, "dest": None, "status": {}, "steps": [],
                "msg": "VM %s has no migration to recover on the hosts that answered (%s)"
                % (instance, ", ".join(sorted(h for h, r in facts.items() if not r.get("failed"))) or "none")}
    # The source's own record names its migration; else the newest claim.
    named = [mid for mid, hosts in candidates.items()
             if any(kind == "domain" and r.get("source") == h for h, (kind, r) in hosts.items())]
    mid = named[0] if len(named) == 1 else max(candidates, key=lambda m: max(
        r.get("updated") or r.get("created") or "" for _k, r in candidates[m].values()))
    hosts = candidates[mid]
    any_rec = next(iter(hosts.values()))[1]
    source, dest = any_rec.get("source"), any_rec.get("dest")
    answered = {"source": source in facts and not facts[source].get("failed"),
                "dest": dest in facts and not facts[dest].get("failed")}
    status = {h: r.get("status") for h, (_k, r) in hosts.items()}
    src_rec = hosts.get(source, (None, {}))[1] if hosts.get(source, ("", {}))[0] == "domain" else {}
    dst_status = status.get(dest)
    src_on_source = answered["source"] and bool((facts.get(source) or {}).get("instance"))
    out = {"id": mid, "source": source, "dest": dest, "status": status, "answered": answered, "action": action,
           "same_host": source == dest, "new_flavor": src_rec.get("new_flavor") or any_rec.get("new_flavor"),
           "old_power_state": src_rec.get("old_power_state"), "old_autostart": bool(src_rec.get("old_autostart")),
           "instance": _from_own_parse((facts.get(source) or {}).get("instance") or {})
           if answered["source"] and (facts.get(source) or {}).get("instance") else None}
    if action == "rollback":
        if dst_status in ("confirming", "confirmed"):
            raise ResizeError("migration %s of %s is %s on %s: the confirm has begun and cannot be rolled back"
                              % (mid, instance, dst_status, dest),
                              hint="finish it with -e action=resume")
        if not answered["dest"] and (src_rec.get("copied") or src_rec.get("status") == "post-migrating") \
                and not out["same_host"]:
            raise ResizeError("migration %s of %s: the copy to %s completed and %s did not answer; it may run the VM, "
                              "so the original is not started" % (mid, instance, dest, dest),
                              hint="run recover.yml again once %s answers" % dest)
        # Same host: the destination step is the one that puts the backups back (revert in place).
        out["steps"] = (["destination"] if answered["dest"] else []) + (["source"] if src_on_source else [])
        pending = [h for h, ok in (("destination " + str(dest), answered["dest"]),
                                   ("source " + str(source), answered["source"])) if not ok]
        out["msg"] = "rolled back migration %s of %s%s" % (
            mid, instance, "; not reached: %s (run recover.yml again once it answers)" % ", ".join(pending)
            if pending else "")
        return out
    # resume
    if not (answered["source"] and answered["dest"]):
        raise ResizeError("migration %s of %s: both its source %s and its destination %s must answer to resume it"
                          % (mid, instance, source, dest), hint="or roll it back with -e action=rollback")
    src_status = src_rec.get("status")
    if dst_status in ("confirming",):
        out["steps"] = ["confirm"]
    elif dst_status == "finished":
        out["steps"] = []
        out["msg"] = "migration %s of %s is finished on %s: confirm or revert it" % (mid, instance, dest)
        return out
    elif src_status == "post-migrating" and not out["same_host"] and dst_status == "pre-migrating" and out["instance"]:
        out["steps"] = ["finish"]
    else:
        raise ResizeError("migration %s of %s cannot be resumed from here (source %s: %s, destination %s: %s): "
                          "its copy did not complete" % (mid, instance, source, src_status, dest, dst_status),
                          hint="roll it back with -e action=rollback")
    out["msg"] = "resumed migration %s of %s: %s" % (mid, instance, ", ".join(out["steps"]))
    return out


def resize_plan_filter(instance, flavor, cpu_topology="scale"):
    """flavor.resize_plan, plus `domain`: the model to render, with its CPU layout made right for the
    flavor (domain.resized_model); every change the model makes is one of the plan's warnings; and
    `carries`: what of the VM's state travels with it (parts.carried)."""
    plan = resize_plan(instance, flavor)
    plan["carries"] = parts.carried(instance)
    if instance.get("firmware_pin"):
        os_el = parse_xml(instance["xml"]).find("os")
        plan["warnings"] = plan["warnings"] + [
            "<os firmware>: the firmware libvirt chose on the source (%s, NVRAM %s) is pinned in the new definition"
            % ((os_el.findtext("loader") or "").strip(), (os_el.findtext("nvram") or "").strip())]
    if instance.get("xml"):
        domain = resized_model(instance["xml"], flavor["vcpus"], flavor["memory_mb"], cpu_topology)
        plan["domain"] = domain
        plan["warnings"] = plan["warnings"] + domain["warnings"]
    return plan


def resize_path(results, source, instance, plan, flavor, mode="auto", host_options=None, target_host=None,
                weights=None, allow_host_access=None, timeout=60):
    """Live or cold, and why (live.decide): live when the VM runs, the change fits its hot-plug
    ceilings, and its own host (not in maintenance, not disabled) takes the increase: the new
    vCPUs and memory, and what its disks grow by (nothing is copied). {path, why, steps, disks}."""
    if mode not in live.MODES:
        raise ResizeError("resize_mode must be one of %s, got %r" % (", ".join(live.MODES), mode))
    host_reasons = []
    if mode != "cold" and instance.get("state") == "running" and (not target_host or target_host == source):
        hv = (_facts(results).get(source) or {}).get("hypervisor") or {}
        opts = (host_options or {}).get(source) or {}
        # The scheduler's one rule for a host that takes nothing (maintenance, its own marker, disabled).
        host_reasons = schedule.fixed_reasons({"hypervisor": hv}, opts)
        if not host_reasons:
            before, after = plan["before"], plan["after"]
            need = {"vcpus": max(after["vcpus"] - before["vcpus"], 0),
                    "memory_mb": max(after["memory_mb"] - before["memory_mb"], 0),
                    "disk_bytes": sum(d["after"] - d["before"] for d in live.live_disks(instance, plan))}
            host_reasons = capacity_reasons(dict(hv, **_limits(opts)), need)
    return live.decide(instance, plan, mode, timeout=timeout, host_reasons=host_reasons, target_host=target_host,
                       source=source)


def resize_ceilings(instance, flavor, flavors, results, dest, max_vcpus="auto", max_memory_mb="auto",
                    lower_to_fit=False):
    """The hot-plug ceilings a cold resize writes into the new definition (live.ceilings), for the
    destination `dest`: {vcpus, memory_mb, warnings}. lower_to_fit: a ceiling above what `dest`
    allows is lowered (a migration keeping the VM's own), not refused."""
    hv = (_facts(results).get(dest) or {}).get("hypervisor") or {}
    return live.ceilings(instance.get("xml"), flavor, flavors, hv, max_vcpus, max_memory_mb, lower_to_fit)


BATCH_KEYS = ("instance", "flavor", "operation", "target_host")
OPERATIONS = ("resize", "migrate")


def batch_requests(requests, allow_empty=False):
    """Check a batch's list of requests; [{instance, flavor, operation, target_host}] in order.
    Refuses the whole list (nothing started) on the first malformed entry, naming it. An empty list
    is refused unless allow_empty (a drain of a host that holds no VM)."""
    if allow_empty and requests == []:
        return []
    if not isinstance(requests, list) or not requests:
        raise ResizeError("resize_requests must be a non-empty list of {instance, flavor} mappings, got %r"
                          % (requests,),
                          hint='e.g. -e \'{"resize_requests": [{"instance": "web01", "flavor": "m1.large"}]}\'')
    out, seen = [], set()
    for i, req in enumerate(requests, 1):
        if not isinstance(req, dict):
            raise ResizeError("resize_requests entry %d must be a mapping, got %r" % (i, req))
        unknown = sorted(set(req) - set(BATCH_KEYS))
        if unknown:
            raise ResizeError("resize_requests entry %d has unknown key(s) %s" % (i, ", ".join(unknown)),
                              hint="an entry has only %s" % ", ".join(BATCH_KEYS))
        name = check_domain_name(req.get("instance") or "")
        if name in seen:
            raise ResizeError("VM %s is asked for twice in the batch (entry %d)" % (name, i),
                              hint="one operation per VM: list each VM once")
        seen.add(name)
        op = req.get("operation") or "resize"
        if op not in OPERATIONS:
            raise ResizeError("resize_requests entry %d (%s): operation must be resize or migrate, got %r"
                              % (i, name, op))
        if op == "resize" and not req.get("flavor"):
            raise ResizeError("resize_requests entry %d (%s) has no flavor" % (i, name),
                              hint="give a flavor, or operation: migrate to move it at its current size")
        out.append({"instance": name, "flavor": req.get("flavor") or "", "operation": op,
                    "target_host": req.get("target_host") or ""})
    return out


def current_flavor(instance):
    """A migrate's flavor: the VM's own size (vCPUs, memory, disks as they are). A disk that is not a
    whole number of GiB (MiB for swap) cannot be written as a flavor: refused, naming it."""
    size = current_size(instance)
    out = {"name": "(current size)", "vcpus": size["vcpus"], "memory_mb": size["memory_mb"]}
    for key, unit, label, field in (("root_bytes", 1024 ** 3, "root disk", "root_gb"),
                                    ("ephemeral_bytes", 1024 ** 3, "ephemeral disk", "ephemeral_gb"),
                                    ("swap_bytes", 1024 ** 2, "swap disk", "swap_mb")):
        value = size.get(key) or 0
        if value % unit:
            raise ResizeError("VM %s: its %s is %d bytes, not a whole number of %s" % (
                instance.get("name"), label, value, "GiB" if unit > 1024 ** 2 else "MiB"),
                hint="name the flavor to move it to (flavor: NAME) instead of migrating it at its current size")
        out[field] = value // unit
    return out


def resize_batch_facts(results, instance):
    """One VM's view of a batch's facts: {host: result with `instance`} as virt_host_facts gives
    it for a single VM (the batch gathered `instances` once)."""
    out = {}
    for host, res in (results or {}).items():
        if not isinstance(res, dict):
            raise AnsibleFilterError("facts of host %s are not a mapping" % host)
        inst = (res.get("instances") or {}).get(instance)
        view = {k: v for k, v in res.items() if k not in ("instances", "results")}
        view["instance"] = inst
        out[host] = view
    return out


def resize_batch_plan(results, requests, flavors, host_options=None, weights=None, allow_host_access=None,
                      cpu_topology="scale", mode="auto", exclude=None, timeout=60, allow_empty=False):
    """Place a whole batch at once: each VM is located, checked and planned as alone (the same
    filters), then schedule.place_many places the moves in order, each counting the ones before it,
    so that the plan never overbooks a host. One VM that cannot go is refused alone, naming why.

    Returns {vms: [{instance, operation, flavor, source, dest, path, why, before, after}],
    refused: [{instance, reason}], unchanged: [names], exclude: [hosts]}."""
    reqs = batch_requests(requests, allow_empty)
    exclude = sorted(set(exclude or []))
    facts = _facts(results)
    planned, refused, unchanged, items = [], [], [], []
    for req in reqs:
        name = req["instance"]
        try:
            view = resize_batch_facts(facts, name)
            bad = [(h, r["instance"]["error"]) for h, r in view.items() if (r.get("instance") or {}).get("error")]
            if bad:
                raise ResizeError("; ".join("%s: %s" % hb for hb in bad))
            src = resize_locate(view, name)
            inst = src["instance"]
            flavor = lookup_flavor(flavors, req["flavor"]) if req["flavor"] else current_flavor(inst)
            plan = resize_plan_filter(inst, flavor, cpu_topology)
            if req["operation"] == "resize" and not plan["changed"]:
                unchanged.append(name)
                continue
            if req["operation"] == "migrate":
                path = {"path": "cold", "why": ["a migration moves the VM to another host"]}
            else:
                path = resize_path(view, src["host"], inst, plan, flavor, mode, host_options=host_options,
                                   target_host=req["target_host"], weights=weights,
                                   allow_host_access=allow_host_access, timeout=timeout)
            refusals, paths = _move_review(inst, allow_host_access or [])
            live_here = path["path"] == "live"
            if refusals and not live_here:
                raise ResizeError("cannot move to another host: %s" % "; ".join(refusals))
            disk_bytes = sum(int(d.get("allocation") or 0) for d in inst.get("moved_files", inst["copy_disks"]))
            items.append({
                "key": name, "source": src["host"],
                "request": {"vcpus": flavor["vcpus"], "memory_mb": flavor["memory_mb"],
                            "disk_bytes": 0 if live_here else disk_bytes},
                "current": {"vcpus": inst["vcpus"], "memory_mb": inst["memory_mb"]},
                "allow_same_host": live_here, "target_host": src["host"] if live_here else req["target_host"] or None,
                "exclude": exclude, "vm_reasons": _vm_reasons(inst, facts, src["host"], paths, refusals)})
            planned.append({"instance": name, "operation": req["operation"], "flavor": flavor["name"],
                            "requested_flavor": req["flavor"],
                            "source": src["host"], "path": path["path"], "why": path["why"],
                            "before": plan["before"], "after": plan["after"]})
        except (ResizeError, AnsibleFilterError) as exc:
            refused.append({"instance": name, "reason": exc.full_message() if isinstance(exc, ResizeError)
                            else str(exc)})
    placed = {p["key"]: p for p in schedule.place_many(facts, items, host_options=host_options, weights=weights)}
    vms = []
    for entry in planned:
        got = placed[entry["instance"]]
        if got.get("host") is None:
            refused.append({"instance": entry["instance"], "reason": got.get("error") or "no valid host"})
            continue
        vms.append(dict(entry, dest=got["host"]))
    return {"vms": vms, "refused": refused, "unchanged": unchanged, "exclude": exclude}


def resize_instance_name(instance):
    """The VM's name if it is a plain libvirt domain name; otherwise the error says what is allowed.
    Checked once on the controller, so that a bad name is one error, not one per host."""
    return check_domain_name(instance)


def resize_due(results, window_seconds, now):
    """Finished resizes whose destination record is older than window_seconds, as of `now`.

    now: an ISO-8601 UTC time like 2026-11-25T10:00:00Z (Jinja: now(utc=true).isoformat()).
    Returns [{instance, id, source, dest, age_seconds}], oldest first.
    """
    try:
        window = int(window_seconds)
    except (TypeError, ValueError):
        raise ResizeError("the confirm window must be a whole number of seconds, got %r" % (window_seconds,))
    if window < 0:
        raise ResizeError("the confirm window must not be negative, got %d" % window)
    ref = _parse_time(now)
    facts = _facts(results)
    sources = {}
    for host, res in facts.items():
        for dom in (res.get("hypervisor") or {}).get("domains", []):
            rec = dom.get("migration") or {}
            if rec.get("source") == host and rec.get("status") == "post-migrating" and rec.get("updated"):
                sources[(dom["name"], rec.get("id"), host)] = rec
    due = []
    for host, res in sorted(facts.items()):
        for dom in (res.get("hypervisor") or {}).get("domains", []):
            rec = dom.get("migration") or {}
            if rec.get("status") != "finished" or rec.get("dest") != host or not rec.get("updated"):
                continue
            # The source must agree (its record of the same migration, copy done): the destination
            # alone cannot make a resize due, and its clock counts only from the source's word.
            # In place (live, or a same-host resize): the one record is both ends' word.
            src = rec if rec.get("source") == host else sources.get((dom["name"], rec.get("id"), rec.get("source")))
            if not src:
                continue
            age = min(ref - _parse_time(rec["updated"]), ref - _parse_time(src["updated"])).total_seconds()
            if age >= window:
                due.append({"instance": dom["name"], "id": rec["id"], "source": rec.get("source"), "dest": host,
                            "age_seconds": int(age)})
    return sorted(due, key=lambda d: (-d["age_seconds"], d["instance"]))


def _parse_time(text):
    text = str(text).strip().replace("Z", "+00:00")
    try:
        value = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ResizeError("%r is not an ISO-8601 time" % (text,))
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value


def resize_batch_requests(results, requests=None, match="", flavor="", operation="resize", drain_host="",
                          undo=False, more=None):
    """A batch's requests from a list (or its YAML/JSON text), a name pattern, or a drain (undo: its
    way back), with the notes on what a way back left out: {requests, notes}."""
    reqs, notes = batch.requests_for(_raw(results), batch.parse_requests(requests) + batch.parse_requests(more),
                                     match, flavor, operation, drain_host, undo)
    return {"requests": reqs, "notes": notes}


def _raw(results):
    if not isinstance(results, dict):
        raise AnsibleFilterError("results must be a mapping {host: virt_host_facts result}")
    return results


class FilterModule:
    def filters(self):
        return {
            "resize_locate": _wrap(resize_locate),
            "resize_flavor": _wrap(lookup_flavor),
            "resize_plan": _wrap(resize_plan_filter),
            "resize_schedule": _wrap(resize_schedule),
            "resize_host_options": _wrap(resize_host_options),
            "resize_migration": _wrap(resize_migration),
            "resize_due": _wrap(resize_due),
            "resize_recovery": _wrap(resize_recovery),
            "resize_instance_name": _wrap(resize_instance_name),
            "resize_path": _wrap(resize_path),
            "resize_ceilings": _wrap(resize_ceilings),
            "resize_batch_plan": _wrap(resize_batch_plan),
            "resize_batch_facts": _wrap(resize_batch_facts),
            "resize_current_flavor": _wrap(current_flavor),
            "resize_batch_requests": _wrap(resize_batch_requests),
            "resize_batch_waves": _wrap(batch.waves),
            "resize_batch_table": _wrap(batch.table),
            "resize_batch_line": _wrap(batch.line),
            "resize_batch_rows": _wrap(batch.rows),
        }
