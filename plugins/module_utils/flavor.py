# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Flavor rules and capacity maths. Private to hypervisor.resize. Pure: no I/O.

Shared by the modules (on the hypervisors) and the filter plugins (on the controller), so the
controller's choice and the destination's own check can never disagree.
"""

from __future__ import annotations

from .errors import ValidationError

GIB = 1024 ** 3
MIB = 1024 ** 2
FLAVOR_KEYS = ("vcpus", "memory_mb", "root_gb", "ephemeral_gb", "swap_mb")
REQUIRED_KEYS = ("vcpus", "memory_mb", "root_gb")

# Power states a VM may be resized from (Nova: ACTIVE or STOPPED).
MOVABLE_STATES = ("running", "shutoff")

DEFAULT_CPU_ALLOCATION_RATIO = 4.0
DEFAULT_RAM_ALLOCATION_RATIO = 1.0
DEFAULT_DISK_ALLOCATION_RATIO = 1.0
DEFAULT_RESERVED_HOST_MEMORY_MB = 512


def normalize_flavor(flavor, name=None):
    """Check a flavor dict and return it with every key present and integer-valued."""
    label = "flavor %s" % name if name else "flavor"
    if not isinstance(flavor, dict):
        raise ValidationError("%s must be a mapping of %s, got %r" % (label, ", ".join(FLAVOR_KEYS), flavor))
    unknown = sorted(set(flavor) - set(FLAVOR_KEYS) - {"name"})
    if unknown:
        raise ValidationError("%s has unknown key(s) %s" % (label, ", ".join(unknown)),
                              hint="a flavor has only %s" % ", ".join(FLAVOR_KEYS))
    missing = [k for k in REQUIRED_KEYS if k not in flavor]
    if missing:
        raise ValidationError("%s lacks %s" % (label, ", ".join(missing)))
    out = {"name": name or flavor.get("name")}
    for key in FLAVOR_KEYS:
        value = flavor.get(key, 0)
        try:
            if isinstance(value, bool):
                raise ValueError
            number = int(value)
            if number != float(value):
                raise ValueError
        except (TypeError, ValueError):
            raise ValidationError("%s: %s must be a whole number, got %r" % (label, key, value))
        if number < 0:
            raise ValidationError("%s: %s must not be negative, got %d" % (label, key, number))
        out[key] = number
    if out["vcpus"] < 1:
        raise ValidationError("%s: vcpus must be at least 1" % label)
    if out["memory_mb"] < 32:
        raise ValidationError("%s: memory_mb must be at least 32" % label)
    return out


def lookup_flavor(flavors, name):
    if not isinstance(flavors, dict) or not flavors:
        raise ValidationError("no flavors are defined",
                              hint="define resize_flavors (name -> vcpus, memory_mb, root_gb, ...) in group_vars")
    if name not in flavors:
        raise ValidationError("unknown flavor %r" % (name,),
                              hint="known flavors: %s" % ", ".join(sorted(flavors)))
    return normalize_flavor(flavors[name], name)


def current_size(instance):
    """The size a VM has now, from its facts: vcpus, memory_mb, root disk bytes."""
    root = instance.get("root_disk") or {}
    eph = instance.get("ephemeral_disk")
    swap = instance.get("swap_disk")
    return {
        "vcpus": int(instance["vcpus"]),
        "memory_mb": int(instance["memory_mb"]),
        "root_bytes": int(root.get("virtual_size") or 0),
        "ephemeral_bytes": int(eph.get("virtual_size") or 0) if eph else None,
        "swap_bytes": int(swap.get("virtual_size") or 0) if swap else None,
    }


def resize_plan(instance, flavor):
    """Compare the VM's current size with a flavor; refuse what must be refused, up front.

    Returns a dict with `changed` and the before/after figures. Raises ValidationError naming the
    rule when the resize is not allowed.
    """
    name = instance.get("name")
    cur = current_size(instance)
    new_root = flavor["root_gb"] * GIB
    if cur["root_bytes"] and flavor["root_gb"] == 0:
        raise ValidationError(
            "flavor %s has root_gb=0 but the VM's root disk is %.1f GiB: a move to a root_gb=0 flavor "
            "is refused" % (flavor["name"], cur["root_bytes"] / GIB),
            domain=name, hint="choose a flavor with root_gb of at least the current root disk")
    if new_root < cur["root_bytes"]:
        raise ValidationError(
            "flavor %s would shrink the root disk from %s to %d GiB; disks are never shrunk"
            % (flavor["name"], _gib(cur["root_bytes"]), flavor["root_gb"]),
            domain=name, hint="choose a flavor whose root_gb is at least %s" % _gib_ceil(cur["root_bytes"]))
    warnings = []
    new_eph = flavor["ephemeral_gb"] * GIB
    if cur["ephemeral_bytes"] is not None and new_eph < cur["ephemeral_bytes"]:
        raise ValidationError(
            "flavor %s would shrink the ephemeral disk from %s to %d GiB; disks are never shrunk"
            % (flavor["name"], _gib(cur["ephemeral_bytes"]), flavor["ephemeral_gb"]),
            domain=name, hint="choose a flavor whose ephemeral_gb is at least %s" % _gib_ceil(cur["ephemeral_bytes"]))
    if cur["ephemeral_bytes"] is None and new_eph:
        warnings.append("flavor %s has ephemeral_gb=%d but the VM has no ephemeral disk (a file named "
                        "*-ephemeral.*); none is added" % (flavor["name"], flavor["ephemeral_gb"]))
    new_swap = flavor["swap_mb"] * MIB
    if cur["swap_bytes"] is None and new_swap:
        warnings.append("flavor %s has swap_mb=%d but the VM has no swap disk (a file named *-swap.*); none is "
                        "added" % (flavor["name"], flavor["swap_mb"]))
    if cur["swap_bytes"] is not None and not new_swap:
        warnings.append("flavor %s has swap_mb=0; the VM's swap disk is kept as it is" % flavor["name"])
    changes = {}
    if cur["ephemeral_bytes"] is not None and new_eph > cur["ephemeral_bytes"]:
        changes["ephemeral_bytes"] = [cur["ephemeral_bytes"], new_eph]
    if cur["swap_bytes"] is not None and new_swap and new_swap != cur["swap_bytes"]:
        changes["swap_bytes"] = [cur["swap_bytes"], new_swap]
    if cur["vcpus"] != flavor["vcpus"]:
        changes["vcpus"] = [cur["vcpus"], flavor["vcpus"]]
    if cur["memory_mb"] != flavor["memory_mb"]:
        changes["memory_mb"] = [cur["memory_mb"], flavor["memory_mb"]]
    if new_root > cur["root_bytes"]:
        changes["root_bytes"] = [cur["root_bytes"], new_root]
    state = instance.get("state")
    if changes and state is not None and state not in MOVABLE_STATES:
        raise ValidationError("the VM is %s; only a running or shut-off VM can be resized" % state,
                              domain=name, hint="resume it (virsh resume) or repair it first")
    after = {"vcpus": flavor["vcpus"], "memory_mb": flavor["memory_mb"], "root_bytes": max(new_root, cur["root_bytes"]),
             "ephemeral_bytes": changes.get("ephemeral_bytes", [None, cur["ephemeral_bytes"]])[1],
             "swap_bytes": changes.get("swap_bytes", [None, cur["swap_bytes"]])[1]}
    return {
        "changed": bool(changes),
        "changes": changes,
        "before": cur,
        "after": after,
        "warnings": warnings,
    }


def _gib(n):
    return ("%.2f" % (n / GIB)).rstrip("0").rstrip(".") + " GiB"


def _gib_ceil(n):
    return "%d" % (-(-n // GIB))


def host_limits(host):
    """Capacity settings of a host (facts plus optional per-host overrides)."""
    return {
        "cpu_ratio": float(host.get("cpu_allocation_ratio", DEFAULT_CPU_ALLOCATION_RATIO)),
        "ram_ratio": float(host.get("ram_allocation_ratio", DEFAULT_RAM_ALLOCATION_RATIO)),
        "disk_ratio": float(host.get("disk_allocation_ratio", DEFAULT_DISK_ALLOCATION_RATIO)),
        "reserved_mb": int(host.get("reserved_host_memory_mb", DEFAULT_RESERVED_HOST_MEMORY_MB)),
    }


def capacity_reasons(host, request):
    """Why `host` cannot take `request`; an empty list when it can.

    host: cpus, memory_mb (totals), allocated_vcpus, allocated_memory_mb, claimed_vcpus,
          claimed_memory_mb, claimed_disk_bytes, free_disk_bytes (+ optional ratios/reserve).
    request: vcpus, memory_mb, disk_bytes (bytes the copy will need on the host).
    """
    lim = host_limits(host)
    reasons = []
    vcpu_cap = int(host["cpus"] * lim["cpu_ratio"])
    vcpu_used = int(host.get("allocated_vcpus", 0)) + int(host.get("claimed_vcpus", 0))
    if vcpu_used + request["vcpus"] > vcpu_cap:
        reasons.append("vCPUs: needs %d, %d of %d free (%d CPUs x allocation ratio %g)"
                       % (request["vcpus"], max(vcpu_cap - vcpu_used, 0), vcpu_cap, host["cpus"], lim["cpu_ratio"]))
    ram_cap = int(host["memory_mb"] * lim["ram_ratio"]) - lim["reserved_mb"]
    ram_used = int(host.get("allocated_memory_mb", 0)) + int(host.get("claimed_memory_mb", 0))
    if ram_used + request["memory_mb"] > ram_cap:
        reasons.append("RAM: needs %d MiB, %d MiB free (%d MiB x ratio %g, %d MiB reserved)"
                       % (request["memory_mb"], max(ram_cap - ram_used, 0), host["memory_mb"],
                          lim["ram_ratio"], lim["reserved_mb"]))
    disk_free = int(int(host.get("free_disk_bytes", 0)) * lim["disk_ratio"]) - int(host.get("claimed_disk_bytes", 0))
    if request.get("disk_bytes", 0) > disk_free:
        reasons.append("disk: needs %s, %s free" % (_gib(request["disk_bytes"]), _gib(max(disk_free, 0))))
    return reasons
