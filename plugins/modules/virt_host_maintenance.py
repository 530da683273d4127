#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: virt_host_maintenance
short_description: Put a hypervisor in maintenance for the resize scheduler, or take it out
version_added: 0.3.0
description:
  - Writes (V(present)) or removes (V(absent)) this host's maintenance marker,
    C(<state_dir>/maintenance.json). While it is there, M(hypervisor.resize.virt_host_facts) reports
    it (C(hypervisor.maintenance)) and the scheduler places no VM on this host, whatever the
    inventory says.
  - C(playbooks/drain.yml) sets it before it moves the host's VMs away, with the drain's id; its way
    back (C(-e undo=true)) marks it V(returning) (the scheduler may place VMs here again, the drain's
    id is kept for a second try), brings back the VMs whose migration record names that drain, then
    removes it.
  - "The marker changes nothing else here: VMs keep running; a live resize in place is refused."
author: hypervisor.resize maintainers (@hypervisor-resize)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - hypervisor.resize.connection
  - hypervisor.resize.connection.state_dir
options:
  state:
    description:
      - V(present) puts the host in maintenance, V(absent) takes it out.
      - V(returning) keeps the marker of a drain (its id) but lets the scheduler place VMs here - the
        drain's way back runs. Fails when the host is not in maintenance from a drain.
    type: str
    choices: [present, absent, returning]
    default: present
  reason:
    description: Why (shown by the scheduler's rejection of this host).
    type: str
    default: maintenance
  drain_id:
    description:
      - Id (a UUID) of the drain that moves this host's VMs away. Kept when the host is already in
        maintenance and O(drain_id) is omitted.
    type: str
  keep_drain_id:
    description:
      - Keep the drain id of a host already in maintenance from a drain (a drain that runs again),
        O(drain_id) being used only when it has none. RV(maintenance) says which.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
notes:
  - Idempotent - a host already in maintenance with the same drain id is left as it is.
"""

EXAMPLES = r"""
- name: Keep the scheduler away from hv1 (ad hoc - ansible hv1 -m hypervisor.resize.virt_host_maintenance)
  hypervisor.resize.virt_host_maintenance:
    reason: new DIMMs

- name: End the maintenance
  hypervisor.resize.virt_host_maintenance:
    state: absent
"""

RETURN = r"""
maintenance:
  description: The marker after the task (null when the host is not in maintenance).
  returned: always
  type: dict
  sample:
    {since: "2026-12-02T10:00:00Z", reason: drain, drain_id: 0b6f5a1e-8d2b-4b7e-9a51-0c2d3e4f5a6b, returning: false}
"""

from ansible_collections.hypervisor.resize.plugins.module_utils import state as state_mod
from ansible_collections.hypervisor.resize.plugins.module_utils.common import ResizeModule


def run(module):
    p = module.params
    changed, before, after = state_mod.set_maintenance(p["state_dir"], p["state"], p["reason"], p["drain_id"],
                                                       p["keep_drain_id"], module.check_mode)
    out = {"changed": changed, "maintenance": after}
    if module._diff:
        out["diff"] = {"before": {"maintenance": before}, "after": {"maintenance": after}}
    return out


def main():
    module = ResizeModule(
        argument_spec=dict(
            state=dict(type="str", choices=["present", "absent", "returning"], default="present"),
            reason=dict(type="str", default="maintenance"),
            drain_id=dict(type="str"),
            keep_drain_id=dict(type="bool", default=False),
        ),
        state_dir=True,
        supports_check_mode=True,
    )
    module.run(run)


if __name__ == "__main__":
    main()
