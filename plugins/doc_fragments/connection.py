# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Paired with CONNECTION_ARGS in plugins/module_utils/common.py.
    DOCUMENTATION = r"""
options:
  uri:
    description:
      - libvirt connection URI on the managed host. Used exactly as given.
    type: str
    default: qemu:///system
requirements:
  - libvirt-python (Debian package C(python3-libvirt)) on the managed host
  - lxml (Debian package C(python3-lxml)) on the managed host
"""

    # Paired with STATE_DIR_ARGS in plugins/module_utils/common.py.
    STATE_DIR = r"""
options:
  state_dir:
    description:
      - Directory on the host where migration records, claims, the receive-only copy script and
        (on the source) the progress of a running copy live while a migration is open. Must be
        the same for every module of one migration.
    type: path
    default: /var/lib/libvirt/hvresize
"""

    # Paired with MIGRATION_ARGS in plugins/module_utils/common.py.
    MIGRATION = r"""
options:
  instance:
    description: Name of the libvirt domain being resized.
    type: str
    required: true
  migration_id:
    description: Id of the migration, as opened by M(hypervisor.resize.virt_resize_prep).
    type: str
    required: true
"""

    # Paired with AUTHORIZED_KEYS_ARGS in plugins/module_utils/common.py.
    AUTHORIZED_KEYS = r"""
options:
  authorized_keys:
    description:
      - The authorized_keys file of root on this host, where the one-off transfer key of a migration
        is authorized (prep) and from which it is removed (finish, revert, confirm).
    type: path
    default: /root/.ssh/authorized_keys
"""

    # Paired with POLICY_ARGS in plugins/module_utils/common.py.
    POLICY = r"""
options:
  allow_host_access:
    description:
      - What of this host the VM may use although it arrives from another host, which this host does
        not trust (docs/security.md). Without an opt-in, a domain that asks for it is refused,
        naming the element and the rule, and nothing is changed.
      - V(hostdev) - host PCI/USB devices, host TPM, host input devices, shared memory (rule D1).
      - V(filesystem) - host directories shared with the guest (D2).
      - V(qemu_namespace) - C(qemu:commandline) and other hypervisor-specific elements (D3).
      - V(host_block_device) - disks that are host block devices or device nodes (D4).
      - V(host_char_device) - serial, console or channel devices on host devices or pipes (D5).
      - V(seclabel) - security labels that relax the confinement libvirt gives the guest (D6).
      - V(host_script) - interface scripts run on the host (D7).
      - V(host_network) - network disks, interfaces other than bridge and network, host-side
        addresses and routes, TCP/UDP character devices (D9).
    type: list
    elements: str
    choices: [hostdev, filesystem, qemu_namespace, host_block_device, host_char_device, seclabel, host_script,
              host_network]
    default: []
  instances_path:
    description:
      - Directory where this host keeps VM disks. Together with the targets of its active libvirt
        C(dir), C(fs) and C(netfs) storage pools it makes this host's storage roots - the only
        places a disk arriving from another host may be written (docs/security.md, rule P1). Its
        free space counts as the host's disk capacity.
    type: path
    default: /var/lib/libvirt/images
"""

    # Paired with CAPACITY_ARGS in plugins/module_utils/common.py.
    CAPACITY = r"""
options:
  cpu_allocation_ratio:
    description: vCPUs per physical CPU for this host's capacity check. Nova's default is 4.0.
    type: float
  ram_allocation_ratio:
    description: Memory overcommit ratio. Default 1.0.
    type: float
  disk_allocation_ratio:
    description: Disk overcommit ratio. Default 1.0.
    type: float
  reserved_host_memory_mb:
    description: Memory kept for the host itself. Default 512.
    type: int
"""

    # Attributes every module of this collection shares.
    ATTRIBUTES = r"""
attributes:
  action_group:
    support: full
    membership:
      - hypervisor.resize.libvirt
  platform:
    support: full
    platforms: posix
"""
