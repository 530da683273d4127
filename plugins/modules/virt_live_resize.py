#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: virt_live_resize
short_description: Resize a running VM in place, without a restart, within its hot-plug ceilings
version_added: 0.2.0
description:
  - Runs on the VM's own host. Sets the memory balloon up to the domain's C(<memory>) ceiling and
    waits up to O(verify_timeout) seconds for the guest to take it (the balloon's actual size, which
    the guest's driver reports, is the new memory); then hot-plugs vCPUs up to its C(<vcpu>) ceiling
    and waits for QEMU to run them and, when the domain has a guest agent channel, for the guest to
    have them online (through the agent, which is asked once to online those it has not; an agent
    that does not answer leaves this unchecked, with a warning). Both in the running VM and in its
    definition, so the next boot keeps the size.
  - The disks in O(disks) are checked now and grown when the resize is confirmed
    (C(virt_confirm_resize), live with C(blockResize)) - a disk never changes before confirm.
  - The change is a plan of steps run by one executor. When a step fails or the guest does not take
    the change in time, every completed step is undone (the balloon and the definition go back) and
    the module fails naming the step, what was undone and what is left - vCPUs the running guest
    already has stay until its next restart (its definition has the old count again). If an undo
    itself fails, the record stays open and C(playbooks/recover.yml) puts the original definition
    back.
  - The migration record (mode C(live)) is kept in the domain's metadata, as for a cold resize;
    C(virt_confirm_resize) confirms and C(virt_revert_resize) reverts it (on this host, as both
    sides), and C(playbooks/recover.yml) rolls back a run that stopped half-way.
  - Refused, with nothing changed - a VM that is not running, a change beyond the ceilings, fewer
    vCPUs or less memory, memory without a balloon, a running VM whose vCPUs differ from its
    definition, a VM that changed since the plan (compare and set against
    O(old_flavor) and each disk's O(disks[].before)), a host that cannot take the increase, a VM
    another operation holds, or an open migration of the VM.
  - The C(hypervisor.resize.resize) role chooses this path by itself when it fits (its
    C(resize_mode)).
author: hypervisor.resize maintainers (@hypervisor-resize)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.actiongroups
  - hypervisor.resize.connection
  - hypervisor.resize.connection.attributes
  - hypervisor.resize.connection.migration
  - hypervisor.resize.connection.state_dir
  - hypervisor.resize.connection.capacity
options:
  uuid:
    description: The VM's UUID; the domain of that name here must have it.
    type: str
    required: true
  flavor:
    description: The new size, a flavor (C(vcpus), C(memory_mb), C(root_gb), ...).
    type: dict
    required: true
  old_flavor:
    description:
      - The size the plan started from (C(vcpus), C(memory_mb)); the VM must still have it, in its
        definition and running, or nothing is done.
    type: dict
    required: true
  disks:
    description: The disks to grow when the resize is confirmed, in order (rule L1 of docs/security.md).
    type: list
    elements: dict
    default: []
    suboptions:
      target:
        description: The disk's target device (C(vda)).
        type: str
        required: true
      path:
        description: The disk's file; it must be the file of that target in the domain.
        type: str
        required: true
      before:
        description: Its virtual size in bytes as planned; it must still be that.
        type: int
        required: true
      after:
        description: Its new virtual size in bytes.
        type: int
        required: true
      role:
        description: Which disk of the flavor it is, for the plan's text.
        type: str
        choices: [root, ephemeral]
        default: root
  verify_timeout:
    description: Seconds to wait for the guest to take the new vCPUs and memory before undoing them.
    type: int
    default: 60
  instances_path:
    description: Directory where this host keeps VM disks; its free space counts for a disk that grows.
    type: path
    default: /var/lib/libvirt/images
attributes:
  check_mode:
    support: full
    details: Checks everything and returns the steps it would take in RV(steps); changes nothing.
  diff_mode:
    support: full
    details: The domain's definition before and after.
"""

EXAMPLES = r"""
- name: Give web01 a second vCPU and 4 GiB, live
  hypervisor.resize.virt_live_resize:
    instance: web01
    uuid: 5b0c8a57-1f8e-4b52-9a6c-0d2f3e4a5b6c
    migration_id: 0b6f0c7e-4c1e-4a7b-9b55-2a8f1f0e6d11
    old_flavor: {vcpus: 1, memory_mb: 2048}
    flavor: {vcpus: 2, memory_mb: 4096, root_gb: 20}
    disks:
      - {target: vda, path: /var/lib/libvirt/images/web01.qcow2, before: 10737418240, after: 21474836480}
  delegate_to: hv1
"""

RETURN = r"""
steps:
  description: The plan, in order (also in check mode).
  returned: always
  type: list
  elements: str
  sample:
    - vCPUs 1 -> 2 (hot-plug, in the running VM and its definition)
    - wait up to 60s for the guest to take the vCPUs
before:
  description: vCPUs and memory before.
  returned: always
  type: dict
after:
  description: vCPUs and memory after.
  returned: always
  type: dict
guest:
  description: What the running VM has after the change - C(vcpus), C(memory_kib) (balloon target), C(actual_kib).
  returned: success
  type: dict
migration:
  description: The migration record (status C(finished), mode C(live)).
  returned: success
  type: dict
"""

from ansible_collections.hypervisor.resize.plugins.module_utils.common import ResizeModule
from ansible_collections.hypervisor.resize.plugins.module_utils.live import apply


def main():
    module = ResizeModule(
        argument_spec=dict(
            uuid=dict(type="str", required=True),
            flavor=dict(type="dict", required=True),
            old_flavor=dict(type="dict", required=True),
            disks=dict(type="list", elements="dict", default=[], options=dict(
                target=dict(type="str", required=True),
                path=dict(type="str", required=True),
                before=dict(type="int", required=True),
                after=dict(type="int", required=True),
                role=dict(type="str", choices=["root", "ephemeral"], default="root"),
            )),
            verify_timeout=dict(type="int", default=60),
            instances_path=dict(type="path", default="/var/lib/libvirt/images"),
        ),
        state_dir=True,
        capacity=True,
        migration=True,
        supports_check_mode=True,
    )
    module.run(lambda m: apply(m.params, m.check_mode))


if __name__ == "__main__":
    main()
