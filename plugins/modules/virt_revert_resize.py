#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: virt_revert_resize
short_description: Undo a resize, on one side at a time; also the rollback after a failed step
version_added: 0.1.0
description:
  - Run with O(side=destination) on the destination first, then with O(side=source) on the source
    (Nova's C(revert_resize) then C(finish_revert_resize)).
  - B(destination) removes only what this migration made there - the domain whose record carries
    O(migration_id), the disk files the receiver wrote (and partial copies), the one-off transfer
    key - and releases the claim.
  - B(source) marks the record C(reverted) and starts the original domain again if it was running
    before; its disks were never touched, so they are byte-identical to before the resize. A source
    the migration never reached (failure before power-off) is left as it is.
  - For a same-host resize (source and destination are this host) the domain is never removed. If
    the disks were already grown, the verified backups beside them are put back and the original
    definition restored; otherwise the backups are deleted.
  - Idempotent, a second run changes nothing.
author: hypervisor.resize maintainers (@hypervisor-resize)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.actiongroups
  - hypervisor.resize.connection
  - hypervisor.resize.connection.attributes
  - hypervisor.resize.connection.migration
  - hypervisor.resize.connection.authorized_keys
  - hypervisor.resize.connection.state_dir
options:
  side:
    description: Which end of the migration this host is.
    type: str
    choices: [source, destination]
    required: true
  reason:
    description: Why the resize is reverted; kept in the record's history.
    type: str
  rollback:
    description:
      - This revert undoes a failed resize (the role's rescue). On the source the record then ends
        in status C(error) with O(reason) and C(rolled_back=true), which does not block a new resize;
        otherwise it ends in C(reverted).
    type: bool
    default: false
  keep_off:
    description:
      - On the source, when the copy had completed - the destination may run the VM, because its own
        rollback did not complete or it could not be reached. The original is then not started and a
        shared disk's backup not put back (either would make a second VM); the record says so, and
        C(playbooks/recover.yml) finishes the rollback once the destination answers.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: Returns the actions it would take in C(actions).
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Revert on the destination
  hypervisor.resize.virt_revert_resize:
    instance: web01
    migration_id: 0b6f0c7e-4c1e-4a7b-9b55-2a8f1f0e6d11
    side: destination
  delegate_to: hv2

- name: Then restore the original on the source
  hypervisor.resize.virt_revert_resize:
    instance: web01
    migration_id: 0b6f0c7e-4c1e-4a7b-9b55-2a8f1f0e6d11
    side: source
    reason: operator revert
  delegate_to: hv1
"""

RETURN = r"""
actions:
  description: What was done (or, in check mode, would be done).
  returned: always
  type: list
  elements: str
  sample: [remove domain web01, delete /var/lib/libvirt/images/web01.qcow2, release claim]
state:
  description: Power state of the original domain afterwards (source side).
  returned: when O(side=source)
  type: str
  sample: running
"""

from ansible_collections.hypervisor.resize.plugins.module_utils.common import ResizeModule
from ansible_collections.hypervisor.resize.plugins.module_utils.settle import revert_destination, revert_source


def main():
    module = ResizeModule(
        argument_spec=dict(
            side=dict(type="str", required=True, choices=["source", "destination"]),
            reason=dict(type="str"),
            rollback=dict(type="bool", default=False),
            keep_off=dict(type="bool", default=False),
        ),
        state_dir=True,
        migration=True,
        authorized_keys=True,
        supports_check_mode=True,
    )
    step = revert_source if module.params["side"] == "source" else revert_destination
    module.run(lambda m: step(m.params, m.check_mode))


if __name__ == "__main__":
    main()
