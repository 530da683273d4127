#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: virt_power_off_migrate
short_description: Power off a VM on the source hypervisor and copy its disks to the destination
version_added: 0.1.0
description:
  - Second step of a cold resize, run on the B(source) hypervisor (Nova's C(resize_instance)).
  - Refuses a VM that is paused, crashed or in the middle of another migration.
  - Writes the migration record into the domain's metadata (status C(migrating)), asks the guest to
    shut down through ACPI, polls every 0.2 s, repeats the request every O(shutdown_retry_interval)
    seconds and stops the VM hard after O(shutdown_timeout) seconds.
  - Before it touches the VM, checks over the one-off key from M(hypervisor.resize.virt_resize_prep)
    that the destination's sshd answers with the pinned host key, that no disk path exists there
    already and that there is room; a failure here leaves the VM running and untouched.
  - Copies every writable file-backed disk directly to the destination over ssh with that key.
    Only allocated, non-zero data crosses the wire, holes stay holes, and the destination checks the
    stream's sha256 before it keeps the file. Network-backed disks (C(<source protocol=...>)) and
    read-only media are never copied.
  - Shared storage is detected, not configured. A disk whose directory holds the marker that
    M(hypervisor.resize.virt_resize_prep) left on the destination is on storage both hosts see. It
    is not sent; instead a verified sparse backup is made beside it (C(<disk>.hvresize-backup)), so
    that revert stays byte-identical while the destination grows and uses the disk (as Nova does).
  - While it copies it rewrites C(<state_dir>/progress/<migration_id>.json) every second (bytes
    done, percent, rate, ETA); run it with C(async) and M(hypervisor.resize.virt_migrate_wait) to
    show that progress. The file is removed when the step ends.
  - A running VM's disks are copied B(while it still runs) (O(precopy)). A disk-only external
    snapshot puts a qcow2 delta beside each disk (C(<disk>.hvresize-delta1)) that the guest writes
    to from then on, the now stable disk is sent, later rounds send the delta before while the guest
    writes to a new one, and after the power-off only the top delta travels. The destination
    commits the deltas into the disk before it uses it. The downtime then grows with what the
    guest wrote during the last round, not with the disk.
  - The source disks are not modified; with their deltas and the definition they are the backup
    until the resize is confirmed. On failure the record says C(error); revert with
    M(hypervisor.resize.virt_revert_resize), which commits the deltas back into the disks and puts
    the original definition back (while the VM runs, with a block commit it does not notice).
author: hypervisor.resize maintainers (@hypervisor-resize)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.actiongroups
  - hypervisor.resize.connection
  - hypervisor.resize.connection.attributes
  - hypervisor.resize.connection.migration
  - hypervisor.resize.connection.state_dir
options:
  same_host:
    description:
      - Resize in place (the destination is this host). Instead of a copy to another host, each disk
        gets a verified sparse backup beside it (C(<disk>.hvresize-backup)), and the original
        definition is kept in the record, so that revert restores both exactly.
    type: bool
    default: false
  dest:
    description:
      - Address or name by which this host reaches the destination's sshd. Required unless O(same_host).
    type: str
  dest_host:
    description: Inventory name of the destination, for the record.
    type: str
    required: true
  dest_port:
    description: Port of the destination's sshd.
    type: int
    default: 22
  dest_host_key:
    description:
      - The destination's public ssh host key (C(type base64)); the copy refuses any other. Required
        unless O(same_host).
    type: str
  transfer_user:
    description: User the one-off key was authorized for on the destination.
    type: str
    default: root
  transfer_private_key:
    description:
      - Private half of the one-off key. Written to a private temporary file for the copy only.
        Required unless O(same_host).
    type: str
  ssh_cipher:
    description: ssh cipher for the copy; the empty string leaves it to ssh.
    type: str
    default: aes128-gcm@openssh.com
  bandwidth_limit:
    description:
      - Average rate limit of the copy in MiB/s on the wire, per disk stream; C(0) means no limit.
    type: int
    default: 0
  compress:
    description:
      - Compress the ssh stream of B(raw) disks (ssh C(Compression=yes)). Helps on slow links with
        compressible data; costs CPU and slows a fast link. qcow2 disks are never compressed.
    type: bool
    default: false
  precopy:
    description:
      - Copy a running VM's disks while it runs, then only what it wrote meanwhile after the
        power-off. Off, every disk is copied after the power-off. Never used for a shut-off VM, with
        O(same_host), or for a disk on storage shared with the destination.
    type: bool
    default: true
  precopy_rounds:
    description:
      - Most copies made while the VM runs (1 to 8). After the first (the disks), another round
        sends the delta of the round before, as long as the delta the guest is writing now is above
        O(precopy_delta_mb) and smaller than what the round before sent. A guest that writes faster
        than the copy runs is cut over at once; the figures say how much was sent after the power-off.
      - No round (or no further round) starts while a disk's directory has less than 1 GiB free, as the
        guest's writes go to the delta there.
    type: int
    default: 3
  precopy_delta_mb:
    description: A delta at or below this many MiB is left for after the power-off (no further round).
    type: int
    default: 64
  old_flavor:
    description: The VM's current size, for the record.
    type: dict
  new_flavor:
    description: The new flavor, for the record.
    type: dict
  shutdown_timeout:
    description: Seconds to wait for a graceful shutdown before stopping the VM hard.
    type: int
    default: 60
  shutdown_retry_interval:
    description: Seconds between repeated ACPI shutdown requests.
    type: int
    default: 10
attributes:
  check_mode:
    support: full
    details: Reports the power state and the disks it would copy; touches nothing.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Power off web01 on hv1 and copy its disks to hv2
  hypervisor.resize.virt_power_off_migrate:
    instance: web01
    migration_id: "{{ prep.migration_id }}"
    dest: hv2
    dest_host: hv2
    dest_host_key: "{{ prep.transfer.host_key }}"
    transfer_private_key: "{{ lookup('ansible.builtin.file', key_dir ~ '/id') }}"
  delegate_to: hv1
"""

RETURN = r"""
old_power_state:
  description: Power state before the step; the finish step restores it.
  returned: always
  type: str
  sample: running
shutdown:
  description: How the VM was stopped (C(graceful), C(hard) or C(none) if it was off) and how long it took.
  returned: changed
  type: dict
  sample: {method: graceful, seconds: 1.6}
disks:
  description:
    - Each disk copied, with bytes of data, bytes on the wire, seconds and sha256 of the stream.
    - A disk on shared storage has C(shared=true) and the path of its C(backup) instead.
  returned: always
  type: list
  elements: dict
  sample:
    - {path: /var/lib/libvirt/images/web01.qcow2, size: 1074135040, bytes: 2293760, wire_bytes: 2293840,
       seconds: 0.21, sha256: 9f2c...}
precopy:
  description:
    - What was copied while the VM ran. C(disks) are the disks pre-copied (none when it was off or
      with O(precopy=false)), C(rounds) the copies made while it ran, C(live_bytes) the data they
      sent and C(after_stop_bytes) the data sent after the power-off (deltas, disks not pre-copied,
      NVRAM and TPM state).
  returned: changed
  type: dict
  sample: {disks: [/var/lib/libvirt/images/web01.qcow2], rounds: 2, live_bytes: 2147483648, after_stop_bytes: 4194304}
down_seconds:
  description: Seconds from the power-off request to the end of the copy, as this host measured them.
  returned: changed
  type: float
  sample: 2.4
migration:
  description: The migration record as now stored in the source domain's metadata.
  returned: changed
  type: dict
  sample: {id: 0b6f0c7e-4c1e-4a7b-9b55-2a8f1f0e6d11, status: post-migrating, old_power_state: running}
"""

from ansible_collections.hypervisor.resize.plugins.module_utils.common import ResizeModule
from ansible_collections.hypervisor.resize.plugins.module_utils.migrate import power_off_migrate


def main():
    module = ResizeModule(
        argument_spec=dict(
            same_host=dict(type="bool", default=False),
            dest=dict(type="str"),
            dest_host=dict(type="str", required=True),
            dest_port=dict(type="int", default=22),
            dest_host_key=dict(type="str", no_log=False),  # a public host key
            transfer_user=dict(type="str", default="root"),
            transfer_private_key=dict(type="str", no_log=True),
            ssh_cipher=dict(type="str", default="aes128-gcm@openssh.com"),
            bandwidth_limit=dict(type="int", default=0),
            compress=dict(type="bool", default=False),
            precopy=dict(type="bool", default=True),
            precopy_rounds=dict(type="int", default=3),
            precopy_delta_mb=dict(type="int", default=64),
            old_flavor=dict(type="dict"),
            new_flavor=dict(type="dict"),
            shutdown_timeout=dict(type="int", default=60),
            shutdown_retry_interval=dict(type="int", default=10),
        ),
        required_if=[("same_host", False, ("dest", "dest_host_key", "transfer_private_key"))],
        migration=True,
        state_dir=True,
        supports_check_mode=True,
    )
    module.run(lambda m: power_off_migrate(m.params, m.check_mode))


if __name__ == "__main__":
    main()
