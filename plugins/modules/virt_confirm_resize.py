#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: virt_confirm_resize
short_description: Confirm a finished resize, one side at a time
version_added: 0.1.0
description:
  - Run with O(side=destination) and O(step=begin) on the destination, then with O(side=source) on
    the source, then with O(side=destination) on the destination again (Nova's C(confirm_resize)).
    The first call is the point of no return - once the destination's record says C(confirming),
    a revert of the same migration is refused there, so a confirm and a revert started together
    cannot both proceed.
  - B(source) deletes the backup - the old definition and the disks this migration copied - and
    only when the record there says the copy completed for O(migration_id) and the domain is shut off.
  - B(destination) moves the record to C(confirmed) and releases the claim. Only a C(finished)
    (or C(confirming)) resize can be confirmed.
  - One operation per VM on each host - a confirm of a VM that another operation holds there (a
    revert, a copy) is refused, naming that operation.
  - For a same-host resize, B(source) deletes only the backups beside the disks; the domain is the VM.
  - Idempotent.
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
  step:
    description:
      - On the destination, V(begin) only moves the record from C(finished) to C(confirming); V(end)
        (the default) completes the confirm (from C(finished) or C(confirming)). Ignored on the source.
    type: str
    choices: [begin, end]
    default: end
attributes:
  check_mode:
    support: full
    details: Returns the actions it would take.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Say on the destination that the resize is being confirmed (a revert is refused from now on)
  hypervisor.resize.virt_confirm_resize:
    instance: web01
    migration_id: 0b6f0c7e-4c1e-4a7b-9b55-2a8f1f0e6d11
    side: destination
    step: begin
  delegate_to: hv2

- name: Delete the backup on the source
  hypervisor.resize.virt_confirm_resize:
    instance: web01
    migration_id: 0b6f0c7e-4c1e-4a7b-9b55-2a8f1f0e6d11
    side: source
  delegate_to: hv1

- name: Close the record on the destination
  hypervisor.resize.virt_confirm_resize:
    instance: web01
    migration_id: 0b6f0c7e-4c1e-4a7b-9b55-2a8f1f0e6d11
    side: destination
  delegate_to: hv2
"""

RETURN = r"""
actions:
  description: What was done (or, in check mode, would be done).
  returned: always
  type: list
  elements: str
  sample: [undefine web01, delete /var/lib/libvirt/images/web01.qcow2]
migration:
  description: The record after confirming (destination side).
  returned: when O(side=destination) and changed
  type: dict
  sample: {id: 0b6f0c7e-4c1e-4a7b-9b55-2a8f1f0e6d11, status: confirmed}
"""

from ansible_collections.hypervisor.resize.plugins.module_utils.common import ResizeModule
from ansible_collections.hypervisor.resize.plugins.module_utils.settle import confirm_destination, confirm_source


def main():
    module = ResizeModule(
        argument_spec=dict(
            side=dict(type="str", required=True, choices=["source", "destination"]),
            step=dict(type="str", default="end", choices=["begin", "end"]),
        ),
        state_dir=True,
        migration=True,
        authorized_keys=True,
        supports_check_mode=True,
    )
    step = confirm_source if module.params["side"] == "source" else confirm_destination
    module.run(lambda m: step(m.params, m.check_mode))


if __name__ == "__main__":
    main()
