# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ResizeModule: AnsibleModule with our shared options and one error path. Private."""

from __future__ import annotations

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ._policy import ALLOW_CHOICES
from .connection import HAS_LIBVIRT, LIBVIRT_IMPORT_ERROR
from .domain import HAS_LXML, LXML_IMPORT_ERROR
from .errors import ResizeError

# Paired with the doc fragment hypervisor.resize.connection.
CONNECTION_ARGS = dict(
    uri=dict(type="str", default="qemu:///system"),
)
STATE_DIR_ARGS = dict(
    state_dir=dict(type="path", default="/var/lib/libvirt/hvresize"),
)
# Paired with the doc fragment hypervisor.resize.connection.migration.
MIGRATION_ARGS = dict(
    instance=dict(type="str", required=True),
    migration_id=dict(type="str", required=True),
)
# Paired with the doc fragment hypervisor.resize.connection.policy.
POLICY_ARGS = dict(
    allow_host_access=dict(type="list", elements="str", default=[], choices=list(ALLOW_CHOICES)),
    instances_path=dict(type="path", default="/var/lib/libvirt/images"),
)
# Paired with the doc fragment hypervisor.resize.connection.authorized_keys.
# Paired with the doc fragment hypervisor.resize.connection.capacity.
CAPACITY_ARGS = dict(
    cpu_allocation_ratio=dict(type="float"),
    ram_allocation_ratio=dict(type="float"),
    disk_allocation_ratio=dict(type="float"),
    reserved_host_memory_mb=dict(type="int"),
)
AUTHORIZED_KEYS_ARGS = dict(
    authorized_keys=dict(type="path", default="/root/.ssh/authorized_keys", no_log=False),
)


class ResizeModule(AnsibleModule):
    def __init__(self, argument_spec, state_dir=False, migration=False, authorized_keys=False, policy=False,
                 capacity=False, **kwargs):
        spec = dict(CONNECTION_ARGS)
        if capacity:
            spec.update(CAPACITY_ARGS)
        if policy:
            spec.update(POLICY_ARGS)
        if state_dir:
            spec.update(STATE_DIR_ARGS)
        if migration:
            spec.update(MIGRATION_ARGS)
        if authorized_keys:
            spec.update(AUTHORIZED_KEYS_ARGS)
        spec.update(argument_spec)
        super().__init__(argument_spec=spec, **kwargs)
        if not HAS_LIBVIRT:
            self.fail_json(msg=missing_required_lib("libvirt-python (Debian: python3-libvirt)"),
                           exception=str(LIBVIRT_IMPORT_ERROR))
        if not HAS_LXML:
            self.fail_json(msg=missing_required_lib("lxml (Debian: python3-lxml)"),
                           exception=str(LXML_IMPORT_ERROR))

    def run(self, func):
        """Call func(self) -> result dict, and exit; a ResizeError becomes fail_json."""
        try:
            result = func(self)
        except ResizeError as exc:
            self.fail_json(**exc.to_result())
        except Exception as exc:  # a bug: say so with the traceback rather than hide it
            self.fail_json(msg="unexpected error in %s: %s" % (self._name, exc), exception=traceback.format_exc())
        self.exit_json(**result)
