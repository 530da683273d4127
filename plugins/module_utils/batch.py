# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A batch's requests (a list, a name pattern, a drain and its way back), its waves (the
concurrency limits) and its closing table. Private to hypervisor.resize. Pure: no I/O.

The placement itself is schedule.place_many (through the resize_batch_plan filter); how a batch
runs is docs/architecture.md, "A batch in one run".
"""

from __future__ import annotations

import re

from .domain import check_domain_name
from .errors import ResizeError, ValidationError
from .state import ID_RE

# A drain's way back brings back a VM only when its current host's record says it came from the
# drained host in that drain, and the move ended (docs/security.md, rule C3).
# Only a confirmed move: a finished one still has its original on the drained host (confirm it, or
# revert it, which brings back the original as it was at the power-off).
RETURNABLE = ("confirmed",)


def _instances(res):
    """{name: model} a host reported (virt_host_facts with instances/all_instances); a model that
    is not a mapping is kept as {} (it selects nothing, and the plan refuses that VM alone)."""
    if not isinstance(res, dict) or res.get("failed") or res.get("unreachable"):
        return {}
    got = res.get("instances") or {}
    if not isinstance(got, dict):
        return {}
    return {str(n): (m if isinstance(m, dict) else {}) for n, m in got.items()}


def _names(names, host, notes):
    """Only plain domain names go into a batch; any other is left, with a note naming its host."""
    out = []
    for n in names:
        try:
            out.append(check_domain_name(n))
        except ResizeError:
            notes.append("%r on %s is not a plain domain name; left (rename it to include it)" % (n, host))
    return out


def _hv(res):
    return (res.get("hypervisor") or {}) if isinstance(res, dict) else {}


def parse_requests(given):
    """A list of requests as given: a list, or its YAML/JSON text (an AWX survey's textarea); empty -> []."""
    if given in (None, ""):
        return []
    if isinstance(given, str) and not given.strip():
        return []
    if isinstance(given, str):
        import yaml  # the controller has it (ansible-core needs it)

        try:
            given = yaml.safe_load(given)
        except yaml.YAMLError as exc:
            raise ValidationError("resize_requests is neither a list nor YAML/JSON text of one: %s" % exc,
                                  hint='e.g. [{"instance": "web01", "flavor": "m1.large"}]; on the command line '
                                       'pass it as JSON: -e \'{"resize_requests": [...]}\'')
    if not isinstance(given, list):
        raise ValidationError("resize_requests must be a list of {instance, flavor} mappings, got %r" % (given,),
                              hint='e.g. [{"instance": "web01", "flavor": "m1.large"}]')
    return given


def requests_for(results, requests=None, match="", flavor="", operation="resize", drain_host="", undo=False):
    """The batch's requests, before batch_requests checks them.

    requests: a list given as is; match: a regular expression (re.search) over the names of every
    VM the hosts reported, each with `flavor` and `operation`; drain_host: every VM defined on that
    host, migrated (undo=False), or every VM its drain moved away, back to it (undo=True).
    Returns (requests, notes): notes say what a drain's way back left out and why."""
    out = list(requests or [])
    notes = []
    if match:
        try:
            rx = re.compile(match)
        except re.error as exc:
            raise ValidationError("resize_match %r is not a regular expression: %s" % (match, exc))
        names = sorted({n for h, res in sorted(results.items()) for n in _names(
            [x for x in _instances(res) if rx.search(x)], h, notes)})
        if not names:
            raise ValidationError("no VM on the hypervisors has a name matching %r" % match,
                                  hint="the pattern is a Python regular expression searched in each name")
        out += [{"instance": n, "flavor": flavor, "operation": operation} for n in names]
    if drain_host:
        if drain_host not in results:
            raise ValidationError("host %s is not one of the hypervisors of this play" % drain_host,
                                  hint="name an inventory host of the hypervisors group")
        res = results[drain_host]
        if not isinstance(res, dict) or res.get("failed") or res.get("unreachable"):
            raise ResizeError("cannot read %s's facts: %s" % (drain_host, (res or {}).get("msg") or "unreachable"))
        if not undo:
            out += [{"instance": n, "operation": "migrate"} for n in _names(sorted(_instances(res)), drain_host, notes)]
        else:
            got, notes = _way_back(results, drain_host)
            if not got and notes:
                raise ValidationError("no VM to bring back to %s: %s" % (drain_host, "; ".join(notes)))
            out += got
    return out, notes


def _way_back(results, drain_host):
    marker = _hv(results[drain_host]).get("maintenance")
    drain_id = marker.get("drain_id") if isinstance(marker, dict) else None
    if not isinstance(drain_id, str) or not ID_RE.fullmatch(drain_id):
        raise ValidationError("host %s is not in maintenance from a drain: no drain to undo" % drain_host,
                              hint="playbooks/drain.yml -e host=%s drains it first" % drain_host)
    out, notes, seen = [], [], {}
    for host in sorted(results):
        if host == drain_host:
            continue
        for name, inst in sorted(_instances(results[host]).items()):
            rec = inst.get("migration") or {}
            if not isinstance(rec, dict) or rec.get("batch") != drain_id:
                continue
            # Rule C3: only what this host's own record says: it received the VM from the drained
            # host, in this drain, and the move ended here. Another host's word never moves a VM.
            # `dest` is what the receiving host calls itself (its hostname), `source` the inventory
            # name the controller gave it.
            here = (host, _hv(results[host]).get("hostname"))
            if rec.get("source") != drain_host or rec.get("dest") not in here or rec.get("instance") != name:
                notes.append("%s on %s: its record does not say it came from %s to %s; left" % (
                    name, host, drain_host, host))
                continue
            if rec.get("status") not in RETURNABLE:
                notes.append("%s on %s: its move is %s, not confirmed; left (confirm it: playbooks/confirm.yml "
                             "-e instance=%s, then run the way back again)" % (name, host, rec.get("status"), name))
                continue
            seen.setdefault(name, []).append(host)
    for name, hosts in sorted(seen.items()):
        if len(hosts) > 1:
            notes.append("%s: reported by %s; left (one VM, one host)" % (name, ", ".join(hosts)))
            continue
        out += [{"instance": n, "operation": "migrate", "target_host": drain_host}
                for n in _names([name], hosts[0], notes)]
    return out, notes


def waves(vms, parallel=4, per_host=2):
    """Order the planned moves into waves: at most `parallel` VMs at once, at most `per_host` on
    any destination host at once (an in-place live resize counts on its own host). Each wave keeps
    the plan's order; a wave ends when no remaining VM fits it.
    Returns {order: [names], sizes: [n per wave], waves: [[names]]}."""
    parallel, per_host = int(parallel), int(per_host)
    if parallel < 1 or per_host < 1:
        raise ValidationError("resize_parallel and resize_parallel_per_host must be at least 1, got %s and %s"
                              % (parallel, per_host))
    rest = list(vms)
    out = []
    while rest:
        wave, count, left = [], {}, []
        for vm in rest:
            dest = vm.get("dest") or vm.get("source")
            if len(wave) < parallel and count.get(dest, 0) < per_host:
                wave.append(vm["instance"])
                count[dest] = count.get(dest, 0) + 1
            else:
                left.append(vm)
        out.append(wave)
        rest = left
    return {"order": [n for w in out for n in w], "sizes": [len(w) for w in out], "waves": out}


def rows(vms, results):
    """The table's rows: each planned VM's result, or, for a VM whose run left none (a host that
    stopped answering mid-move bypasses the rescue; a wave that never started), a failure saying so."""
    out = []
    for vm, res in zip(vms, list(results or []) + [None] * len(vms)):
        if isinstance(res, dict) and res.get("result"):
            out.append(res)
        else:
            out.append(dict(vm, downtime=None, result="failed: no result (its run stopped: a host that did not "
                            "answer, or the batch ended early; see above, then playbooks/recover.yml -e instance=%s)"
                            % vm.get("instance")))
    return out


def _size(s):
    if not s:
        return "-"
    root = s.get("root_bytes")
    disk = "" if root is None else " %g GiB" % (root / 1024 ** 3)
    return "%s vCPU %s MiB%s" % (s.get("vcpus"), s.get("memory_mb"), disk)


def line(entry):
    """One line of the plan: a placed VM, or a refused one with its reason."""
    if "reason" in entry:
        return "%s: refused: %s" % (entry.get("instance"), entry.get("reason"))
    what = "migrate at its size" if entry.get("operation") == "migrate" and not entry.get("requested_flavor", True) \
        else "%s to %s" % (entry.get("operation"), entry.get("flavor"))
    return "%s: %s -> %s, %s (%s): %s" % (
        entry.get("instance"), entry.get("source"), entry.get("dest"), what, entry.get("path"),
        "; ".join(entry.get("why") or []))


def table(rows, refused=(), unchanged=()):
    """The batch's closing table as lines: VM, from, to, before, after, downtime, result. `refused`
    ({instance, reason}) and `unchanged` (names) from the plan get a row each too."""
    head = ("VM", "from", "to", "before", "after", "downtime", "result")
    rows = list(rows) + [{"instance": r.get("instance"), "result": "refused (why: below)"} for r in refused] + \
        [{"instance": n, "result": "already that size"} for n in unchanged]
    body = []
    for r in rows:
        down = r.get("downtime")
        body.append((str(r.get("instance")), str(r.get("source") or "-"), str(r.get("dest") or "-"),
                     _size(r.get("before")), _size(r.get("after")),
                     "-" if down in (None, "") else ("%.1fs" % float(down)), str(r.get("result") or "-")))
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head) - 1)]
    return ["  ".join(c.ljust(w) for c, w in zip(x[:-1], widths)) + "  " + x[-1] for x in [head] + body]
