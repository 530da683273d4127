#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: virt_host_facts
short_description: Capacity, domains and claims of a libvirt hypervisor
version_added: 0.1.0
description:
  - Reports what the resize scheduler needs to know about a hypervisor host, read-only.
  - CPUs, memory, architecture and CPU model, libvirt and QEMU versions, free space where instance
    disks live, the vCPUs and memory given to every defined domain, outstanding resize claims, and
    the bridges and libvirt networks present.
  - With O(instance), also the full model of that domain when it is defined here (its disks with
    virtual and allocated sizes, NICs, the migration record if any), which the role uses to render
    the resized domain XML.
author: hypervisor.resize maintainers (@hypervisor-resize)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.actiongroups
  - hypervisor.resize.connection
  - hypervisor.resize.connection.attributes
  - hypervisor.resize.connection.state_dir
options:
  instance:
    description:
      - Name of a domain to describe in detail. Not an error when it is not defined on this host.
    type: str
  instances:
    description:
      - Names of domains to describe in detail, as O(instance) does for one (a batch gathers its
        facts once). Those not defined on this host are left out of RV(instances).
    type: list
    elements: str
    default: []
  all_instances:
    description:
      - Describe every domain defined on this host (what draining it moves), in RV(instances).
    type: bool
    default: false
  instances_path:
    description:
      - Directory where instance disks live; its free space is reported.
    type: path
    default: /var/lib/libvirt/images
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
notes:
  - Never changes anything; safe in check mode.
"""

EXAMPLES = r"""
- name: Gather facts from every hypervisor
  hypervisor.resize.virt_host_facts:
    instance: web01
  register: hv

- name: Ad-hoc, from the shell
  ansible.builtin.debug:
    msg: "ansible hypervisors -m hypervisor.resize.virt_host_facts"
"""

RETURN = r"""
hypervisor:
  description:
    - Facts of this hypervisor.
    - C(storage_roots) - where a disk arriving from another host may be written (the instances path
      and the targets of active libvirt C(dir), C(fs), C(netfs) pools; docs/security.md rule P1);
      C(storage_roots_refused) - pool targets never used as roots (under the deny list).
    - C(migrations) - the migrations this host prepared and still holds (claims), also those with no
      domain here yet; what C(playbooks/recover.yml) cleans.
    - C(swtpm) - whether swtpm is installed (libvirt needs it to run a VM's emulated TPM; the
      scheduler rejects a host without it for such a VM).
    - C(maintenance) - null, or this host's maintenance marker C({since, reason, drain_id, returning})
      that M(hypervisor.resize.virt_host_maintenance) wrote (a drain); the scheduler places nothing
      here while it is set, unless C(returning) (the drain's way back runs).
  returned: always
  type: dict
  sample:
    hostname: hv1
    arch: x86_64
    cpu_model: Skylake-Client-IBRS
    cpus: 2
    memory_mb: 24032
    free_memory_mb: 22011
    libvirt_version: 9.0.0
    hypervisor_version: 7.2.0
    allocated_vcpus: 1
    allocated_memory_mb: 128
    claimed_vcpus: 0
    claimed_memory_mb: 0
    claimed_disk_bytes: 0
    free_disk_bytes: 85899345920
    instances_path: /var/lib/libvirt/images
    storage_roots: [/var/lib/libvirt/images, /var/lib/libvirt/shared]
    storage_roots_refused: []
    migrations: [{id: 0b6f..., instance: web01, uuid: 6f1c..., status: pre-migrating, source: hv1, dest: hv2}]
    bridges: [vmbr0]
    networks: []
    swtpm: true
    maintenance: null
    domains:
      - {name: web01, uuid: 6f1c..., state: running, vcpus: 1, memory_mb: 128, migration: null}
instance:
  description:
    - Model of O(instance) when it is defined on this host, else null.
    - C(busy) - the operation that holds the VM on this host right now (one operation per VM), or null.
    - C(moved_files) - every file a move to another host copies and verifies - its disks and its
      state files (UEFI NVRAM store, vTPM state), as docs/architecture.md's table "What a move
      carries" says - with C(device) C(disk), C(nvram) or C(tpm).
    - C(snapshots), C(checkpoints), C(managed_save), C(tpm_extra) - what a move to another host cannot
      carry yet; the resize is refused up front, naming it.
  returned: when O(instance) is given
  type: dict
  sample:
    name: web01
    uuid: 6f1c3a4e-8d2b-4b7e-9a51-0c2d3e4f5a6b
    state: running
    vcpus: 1
    memory_mb: 128
    root_disk: {path: /var/lib/libvirt/images/web01.qcow2, format: qcow2, virtual_size: 1073741824, allocation: 2490368}
    disks: []
    copy_disks: [{path: /var/lib/libvirt/images/web01.qcow2, format: qcow2, allocation: 2490368}]
    moved_files:
      - {device: disk, path: /var/lib/libvirt/images/web01.qcow2, format: qcow2, allocation: 2490368}
      - {device: tpm, path: /var/lib/libvirt/swtpm/6f1c3a4e-8d2b-4b7e-9a51-0c2d3e4f5a6b/tpm2/tpm2-00.permall,
         format: raw, allocation: 8192, virtual_size: 6101, optional: true}
    snapshots: []
    checkpoints: []
    managed_save: false
    tpm_extra: []
    interfaces: [{type: bridge, mac: "52:54:00:12:34:56", source: {bridge: vmbr0}}]
    model: {}
    xml: "<domain type='qemu'>...</domain>"
    migration: null
    busy: {operation: power-off and copy, migration_id: 0b6f..., pid: 4242, since: "2026-12-02T10:00:00Z"}
instances:
  description:
    - The model (as RV(instance)) of each domain of O(instances), or of every domain with
      O(all_instances), that is defined on this host, by name.
  returned: when O(instances) or O(all_instances) is given
  type: dict
  sample: {web01: {name: web01, uuid: 6f1c3a4e-8d2b-4b7e-9a51-0c2d3e4f5a6b, state: running, vcpus: 1}}
"""

from ansible_collections.hypervisor.resize.plugins.module_utils.common import ResizeModule
from ansible_collections.hypervisor.resize.plugins.module_utils.facts import gather


def main():
    module = ResizeModule(
        argument_spec=dict(
            instance=dict(type="str"),
            instances=dict(type="list", elements="str", default=[]),
            all_instances=dict(type="bool", default=False),
            instances_path=dict(type="path", default="/var/lib/libvirt/images"),
        ),
        state_dir=True,
        supports_check_mode=True,
    )
    module.run(lambda m: gather(m.params))


if __name__ == "__main__":
    main()
