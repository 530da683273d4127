#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: virt_resize_prep
short_description: Validate a resize on the destination hypervisor, claim resources, open the migration record
version_added: 0.1.0
description:
  - First step of a cold resize, run on the B(destination) hypervisor (Nova's C(prep_resize)).
  - Refuses, changing nothing, when the VM is already defined here, a storage path, bridge,
    libvirt network or shared boot file is missing, another
    migration of the VM is open here, or the host lacks vCPUs, memory or disk for the new flavor
    (allocation ratios and reserved memory as Nova counts them, outstanding claims included).
  - Trusts nothing the source's definition says (docs/security.md) - O(domain_xml) is checked
    against this host's rules first, each refusal naming the element, the path and the rule.
  - Otherwise, under a lock on O(state_dir) so that concurrent resizes cannot overbook the host,
    records a claim, opens the migration record (status C(pre-migrating)), and authorizes the
    one-off O(transfer_public_key) for root with C(restrict), C(from=) the source's address,
    C(expiry-time=) and a forced command that can do nothing but receive this migration's disks
    into their listed paths. The key is revoked when the migration finishes or is reverted, and
    expires by itself. The private half never comes here.
  - Disk paths that exist here already are not refused yet. They are either on storage shared
    with the source, or stale files. It leaves a marker C(.hvresize-shared-<migration_id>) in
    each disk directory; M(hypervisor.resize.virt_power_off_migrate) finds it on the source only
    if the directory is shared, and otherwise refuses the stale files before the VM is touched.
    Disks already here count for no new disk space in the claim.
author: hypervisor.resize maintainers (@hypervisor-resize)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.actiongroups
  - hypervisor.resize.connection
  - hypervisor.resize.connection.attributes
  - hypervisor.resize.connection.authorized_keys
  - hypervisor.resize.connection.policy
  - hypervisor.resize.connection.state_dir
  - hypervisor.resize.connection.capacity
options:
  instance:
    description: Name of the domain being resized.
    type: str
    required: true
  uuid:
    description: UUID of the domain on the source.
    type: str
    required: true
  migration_id:
    description:
      - Id (a UUID) for the migration. The role makes it up front so that its rollback can always
        name what to undo, even when this step itself fails half-way. Made here when omitted.
    type: str
  batch_id:
    description:
      - Id (a UUID) of the batch this move belongs to, kept in the record. A drain's way back
        (C(playbooks/drain.yml -e undo=true)) brings back the VMs whose record names the drain.
    type: str
  source_host:
    description: Name of the source hypervisor, for the record.
    type: str
    required: true
  same_host:
    description:
      - Resize in place on this host, which is also the source. The VM's disks stay where they are
        and are backed up beside themselves by M(hypervisor.resize.virt_power_off_migrate); only the
        increase in vCPUs and memory, and room for the backups, is claimed. No transfer key is
        authorized.
    type: bool
    default: false
  flavor:
    description:
      - The new flavor, with keys C(name), C(vcpus), C(memory_mb), C(root_gb) and optionally
        C(ephemeral_gb) and C(swap_mb).
    type: dict
    required: true
  old_flavor:
    description: The VM's current size, for the record.
    type: dict
  disks:
    description:
      - The disk images that will be copied here, as reported by M(hypervisor.resize.virt_host_facts)
        on the source; the first is the root disk. Each needs C(path); C(allocation) (bytes) is
        claimed; an image with C(backing_file) is refused.
    type: list
    elements: dict
    required: true
  domain_xml:
    description:
      - The domain as it will be defined here (rendered from the source's definition and the new
        flavor). Checked here, against this host's own rules, before anything is written - every
        element and host path it names (docs/security.md); files it only reads (kernel, initrd,
        firmware, ISO media) must already exist here. Its disks must be O(disks).
    type: str
    required: true
  source_address:
    description:
      - Address the source connects from for the copy (a host name, resolved here, or an IP
        address). The one-off key is accepted only from there (C(from=)). Defaults to O(source_host).
    type: str
  copy_timeout:
    description:
      - Seconds the copy may take. The one-off key expires by itself that long (plus 15 minutes)
        after this step (C(expiry-time=)), even if nothing revokes it.
    type: int
    default: 21600
  precopy_rounds:
    description:
      - Rounds of copy while the VM runs that the source may make (its C(precopy_rounds); C(0) when it
        copies after the power-off only). The receiver may write that many deltas of each disk
        (C(<disk>.hvresize-delta1) on), and no other name (docs/security.md R4).
    type: int
    default: 3
  interfaces:
    description: NICs of the domain (C(type), C(source)); their bridges or networks must exist here.
    type: list
    elements: dict
    default: []
  transfer_public_key:
    description:
      - Public half (C(type base64 [comment])) of a key pair made for this one migration, usually by
        the role on the controller. Its private half goes to
        M(hypervisor.resize.virt_power_off_migrate) on the source.
    type: str
    required: true
  ssh_host_key:
    description: Public host key of this host's sshd, handed to the source so it can verify this host.
    type: path
    default: /etc/ssh/ssh_host_ed25519_key.pub
attributes:
  check_mode:
    support: full
    details: Validates everything and returns the claim it would make; writes nothing.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Claim room for web01 on hv2
  hypervisor.resize.virt_resize_prep:
    instance: web01
    uuid: "{{ src.instance.uuid }}"
    source_host: hv1
    flavor: {name: m1.small, vcpus: 2, memory_mb: 2048, root_gb: 20}
    disks: "{{ src.instance.disks }}"
    transfer_public_key: "{{ lookup('ansible.builtin.file', key_dir ~ '/id.pub') }}"
  delegate_to: hv2
  register: prep
"""

RETURN = r"""
migration_id:
  description: Id of the migration opened (in check mode, O(migration_id) as given).
  returned: always
  type: str
  sample: 0b6f0c7e-4c1e-4a7b-9b55-2a8f1f0e6d11
migration:
  description: The migration record as written.
  returned: always
  type: dict
  sample: {id: 0b6f0c7e-4c1e-4a7b-9b55-2a8f1f0e6d11, status: pre-migrating, instance: web01, source: hv1, dest: hv2}
claim:
  description: Resources claimed on this host until the migration is confirmed or reverted.
  returned: always
  type: dict
  sample: {vcpus: 2, memory_mb: 256, disk_bytes: 2490368, root_growth_bytes: 1073741824}
present:
  description: Disk paths that exist here already (shared storage with the source, or stale files).
  returned: always
  type: list
  elements: str
  sample: [/var/lib/libvirt/shared/web01.qcow2]
destination:
  description: This host's name and free disk space.
  returned: always
  type: dict
  sample: {hostname: hv2, free_disk_bytes: 85899345920}
transfer:
  description:
    - What the source needs to reach this host for the copy - this host's public ssh host key,
      which the source pins (after checking it is one key, nothing more) instead of trusting blindly.
      The user the source logs in as is the role variable C(resize_transfer_user), never taken from here.
  returned: always
  type: dict
  sample: {host_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI..."}
"""

from ansible_collections.hypervisor.resize.plugins.module_utils.common import ResizeModule
from ansible_collections.hypervisor.resize.plugins.module_utils.prep import prep


def main():
    module = ResizeModule(
        argument_spec=dict(
            instance=dict(type="str", required=True),
            uuid=dict(type="str", required=True),
            migration_id=dict(type="str"),
            batch_id=dict(type="str"),
            same_host=dict(type="bool", default=False),
            source_host=dict(type="str", required=True),
            flavor=dict(type="dict", required=True),
            old_flavor=dict(type="dict"),
            disks=dict(type="list", elements="dict", required=True),
            domain_xml=dict(type="str", required=True),
            source_address=dict(type="str"),
            copy_timeout=dict(type="int", default=21600),
            precopy_rounds=dict(type="int", default=3),
            interfaces=dict(type="list", elements="dict", default=[]),
            transfer_public_key=dict(type="str", required=True),
            ssh_host_key=dict(type="path", default="/etc/ssh/ssh_host_ed25519_key.pub"),
        ),
        state_dir=True,
        capacity=True,
        authorized_keys=True,
        policy=True,
        supports_check_mode=True,
    )
    module.run(lambda m: prep(m.params, m.check_mode))


if __name__ == "__main__":
    main()
