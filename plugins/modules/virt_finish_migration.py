#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: virt_finish_migration
short_description: Grow the copied disks, define the resized domain and restore its power state
version_added: 0.1.0
description:
  - Third step of a cold resize, run on the B(destination) hypervisor (Nova's C(finish_resize)).
  - Checks that every disk of the migration was received and verified here, and that O(domain_xml)
    is this VM (same name and UUID, the copied disks) at the new flavor's size.
  - Grows the root disk to the flavor's C(root_gb) and the ephemeral disk to C(ephemeral_gb) with
    C(qemu-img resize) (never shrinks), recreates the swap disk blank at C(swap_mb), defines
    the domain with libvirt's schema validation, writes the record (status C(finished)) into its
    metadata, starts it when O(power_state) is C(running), and revokes the one-off transfer key.
  - The resize then waits for M(hypervisor.resize.virt_confirm_resize) or
    M(hypervisor.resize.virt_revert_resize); the source keeps its disks until then.
author: hypervisor.resize maintainers (@hypervisor-resize)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.actiongroups
  - hypervisor.resize.connection
  - hypervisor.resize.connection.attributes
  - hypervisor.resize.connection.migration
  - hypervisor.resize.connection.authorized_keys
  - hypervisor.resize.connection.policy
  - hypervisor.resize.connection.state_dir
options:
  domain_xml:
    description: The resized domain XML, rendered from the source domain and the new flavor.
    type: str
    required: true
  source_xml:
    description:
      - The VM's definition on the source, for the diff (before) shown with C(--diff). In check mode
        without an open migration (a dry run of the whole resize) the module only validates
        O(domain_xml) and returns that diff.
    type: str
  power_state:
    description: Power state to restore (the source's state before power-off).
    type: str
    choices: [running, shutoff]
    required: true
  autostart:
    description:
      - Start the domain with this host (libvirt autostart), as the source's domain did. The source's
        own autostart is off from the power-off on, and back on after a revert.
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: Validates and returns the diff; grows, defines and starts nothing.
  diff_mode:
    support: full
    details: The domain XML before (none) and after.
"""

EXAMPLES = r"""
- name: Define and start web01 on hv2 at its new size
  hypervisor.resize.virt_finish_migration:
    instance: web01
    migration_id: "{{ prep.migration_id }}"
    domain_xml: "{{ lookup('ansible.builtin.template', 'domain.xml.j2') }}"
    power_state: "{{ moved.old_power_state }}"
  delegate_to: hv2
"""

RETURN = r"""
state:
  description: Power state of the domain on this host afterwards.
  returned: always
  type: str
  sample: running
disk_actions:
  description:
    - What was done to the ephemeral disk (grown to the flavor's C(ephemeral_gb)) and the swap disk
      (recreated blank at C(swap_mb)). Disks whose file name stem ends in C(-ephemeral) or C(-swap)
      are the ephemeral and swap disks (Nova's C(disk.local) and C(disk.swap)).
  returned: changed and not check mode
  type: list
  elements: str
  sample: ["grew ephemeral disk /var/lib/libvirt/images/web01-ephemeral.qcow2 to 2 GiB"]
grown:
  description: Whether the root disk was grown.
  returned: changed and not check mode
  type: bool
  sample: true
root_disk:
  description: The root disk after growing (path, format, virtual_size, allocation).
  returned: changed and not check mode
  type: dict
  sample: {path: /var/lib/libvirt/images/web01.qcow2, format: qcow2, virtual_size: 2147483648}
domain:
  description: Name, UUID, vCPUs, memory, MACs and disks of the defined domain.
  returned: changed and not check mode
  type: dict
  sample:
    {name: web01, uuid: 6f1c3a4e-8d2b-4b7e-9a51-0c2d3e4f5a6b, vcpus: 2, memory_mb: 256,
     macs: ["52:54:00:12:34:56"]}
migration:
  description: The migration record in the new domain's metadata.
  returned: success, not in check mode
  type: dict
  sample: {id: 0b6f0c7e-4c1e-4a7b-9b55-2a8f1f0e6d11, status: finished}
"""

from ansible_collections.hypervisor.resize.plugins.module_utils.common import ResizeModule
from ansible_collections.hypervisor.resize.plugins.module_utils.finish import finish


def main():
    module = ResizeModule(
        argument_spec=dict(
            domain_xml=dict(type="str", required=True),
            source_xml=dict(type="str"),
            power_state=dict(type="str", required=True, choices=["running", "shutoff"]),
            autostart=dict(type="bool", default=False),
        ),
        state_dir=True,
        migration=True,
        authorized_keys=True,
        policy=True,
        supports_check_mode=True,
    )
    module.run(lambda m: finish(m.params, m.check_mode))


if __name__ == "__main__":
    main()
