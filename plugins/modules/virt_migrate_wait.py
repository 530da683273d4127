#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: virt_migrate_wait
short_description: Wait for an async disk copy, showing its progress, and return its result
version_added: 0.1.0
description:
  - Waits for a M(hypervisor.resize.virt_power_off_migrate) task that was started with C(async) and
    C(poll=0), on the same (source) host.
  - "While the copy runs, prints a line on the controller at most every O(interval) seconds whenever
    the progress changed, for example C([hv1] copying disk 1/1 /var/lib/libvirt/images/web01.qcow2:
    512.0 MiB of 1.0 GiB (50.0%), 210.3 MiB/s, ETA 0:00:02)."
  - Returns the result of the copy step itself (failed or not, with its message), so a C(rescue)
    can act on it as if the step had run synchronously; the async job's status file is cleaned up.
  - The progress is what the source writes to C(<state_dir>/progress/<migration_id>.json) every
    second. Without O(jid) (for example ad hoc, while a resize runs elsewhere) it reads that file
    once and returns it, with the same line as RV(msg).
author: hypervisor.resize maintainers (@hypervisor-resize)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
  - hypervisor.resize.connection.state_dir
options:
  jid:
    description:
      - The C(ansible_job_id) registered from the async virt_power_off_migrate task. Without it,
        the progress is read once and returned.
    type: str
  migration_id:
    description: Id of the migration being copied.
    type: str
    required: true
  interval:
    description: Seconds between polls of the job and its progress.
    type: float
    default: 3
  async_dir:
    description:
      - Set by the action, not by playbooks. The directory of async job results on this host.
    type: path
  watch:
    description:
      - Set by the action, not by playbooks. Seconds to watch the job here before returning.
    type: float
    default: 0
  timeout:
    description:
      - Seconds to wait in all. When they run out the task fails but the copy keeps running on the
        host (its own C(async) limit stops it); use a timeout at least as long as that limit.
    type: int
    default: 21600
attributes:
  action:
    support: full
  async:
    support: none
  bypass_host_loop:
    support: none
  check_mode:
    support: full
    details: It only reads.
  diff_mode:
    support: none
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: Power off and copy, in the background
  hypervisor.resize.virt_power_off_migrate:
    instance: web01
    migration_id: "{{ mid }}"
    dest: hv2
    dest_host: hv2
    dest_host_key: "{{ prep.transfer.host_key }}"
    transfer_private_key: "{{ lookup('ansible.builtin.file', key_dir ~ '/id') }}"
  delegate_to: hv1
  async: 21600
  poll: 0
  register: copy_job

- name: Show the copy's progress until it ends
  hypervisor.resize.virt_migrate_wait:
    jid: "{{ copy_job.ansible_job_id }}"
    migration_id: "{{ mid }}"
  delegate_to: hv1
  register: moved
"""

RETURN = r"""
progress:
  description: The copy's latest progress record (when the module is run alone), or null when no copy runs.
  returned: always
  type: dict
  sample: {phase: copying, disk: /var/lib/libvirt/images/web01.qcow2, disk_index: 1, disks: 1,
           bytes_done: 536870912, bytes_total: 1073741824, percent: 50.0, rate_bytes_per_s: 220500000,
           eta_seconds: 2.4}
msg:
  description: The progress as one line, when a copy is running and O(jid) was not given.
  returned: when a copy is running and O(jid) was not given
  type: str
  sample: "copying disk 1/1 /var/lib/libvirt/images/web01.qcow2: 512.0 MiB of 1.0 GiB (50.0%), 210.3 MiB/s, ETA 0:00:02"
progress_lines:
  description: How many progress lines were printed while waiting (by the action).
  returned: when waiting on a job
  type: int
  sample: 4
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.hypervisor.resize.plugins.module_utils._transfer.progress import read_json, watch_job
from ansible_collections.hypervisor.resize.plugins.module_utils.common import STATE_DIR_ARGS
from ansible_collections.hypervisor.resize.plugins.module_utils.errors import ResizeError
from ansible_collections.hypervisor.resize.plugins.module_utils.state import progress_path


def main():
    module = AnsibleModule(
        argument_spec=dict(
            STATE_DIR_ARGS,
            jid=dict(type="str"),
            migration_id=dict(type="str", required=True),
            interval=dict(type="float", default=3),
            timeout=dict(type="int", default=21600),
            async_dir=dict(type="path"),
            watch=dict(type="float", default=0),
        ),
        supports_check_mode=True,
    )
    p = module.params
    result = {"changed": False}
    try:
        path = progress_path(p["state_dir"], p["migration_id"])
        if p["jid"] and p["async_dir"]:
            # Watched here, on the source: the job's end is seen within a tenth of a second.
            job = watch_job(os.path.join(p["async_dir"], p["jid"]), p["watch"])
            if job is not None:
                result["job"] = job
    except ResizeError as exc:
        module.fail_json(**exc.to_result())
    result["progress"] = read_json(path)
    result["path"] = path if os.path.exists(path) else None
    module.exit_json(**result)


if __name__ == "__main__":
    main()
