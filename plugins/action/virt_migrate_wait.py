# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action of virt_migrate_wait: poll an async virt_power_off_migrate job, print its copy progress
on the controller while it runs, and return the job's own result when it ends."""

from __future__ import annotations

import time

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()

ASYNC_KEYS = ("ansible_job_id", "started", "finished", "results_file", "stdout", "stderr",
              "stdout_lines", "stderr_lines")


def human_bytes(n):
    n = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0
    return "%d B" % n


def human_seconds(s):
    s = int(round(s))
    return "%d:%02d:%02d" % (s // 3600, (s // 60) % 60, s % 60)


def progress_line(prog):
    """One line for the operator from the progress record the source writes."""
    if not prog:
        return None
    phase = prog.get("phase") or "working"
    if phase != "copying" and not str(phase).startswith("pre-copying"):
        return "%s%s" % (phase, (" %s" % prog["disk"]) if prog.get("disk") and phase.startswith("backing") else "")
    eta = prog.get("eta_seconds")
    return "%s disk %d/%d %s: %s of %s (%.1f%%), %s/s, ETA %s" % (
        phase, prog.get("disk_index") or 0, prog.get("disks") or 0, prog.get("disk") or "",
        human_bytes(prog.get("bytes_done")), human_bytes(prog.get("bytes_total")), prog.get("percent") or 0.0,
        human_bytes(prog.get("rate_bytes_per_s")), human_seconds(eta) if eta is not None else "unknown")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("jid", "migration_id", "state_dir", "interval", "timeout"))

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        validation, args = self.validate_argument_spec(argument_spec=dict(
            jid=dict(type="str"),
            migration_id=dict(type="str", required=True),
            state_dir=dict(type="path", default="/var/lib/libvirt/hvresize"),
            interval=dict(type="float", default=3.0),
            timeout=dict(type="int", default=21600),
        ))
        if args["interval"] <= 0 or args["timeout"] <= 0:
            return dict(result, failed=True, msg="interval and timeout must be positive numbers of seconds")
        host = self._task.delegate_to or task_vars.get("inventory_hostname")
        if not args["jid"]:
            # No job to wait for: one look at the progress file (e.g. ad hoc, from another shell).
            snap = self._execute_module(module_name="hypervisor.resize.virt_migrate_wait", task_vars=task_vars,
                                        module_args={"migration_id": args["migration_id"],
                                                     "state_dir": args["state_dir"]})
            self._remove_tmp_path(self._connection._shell.tmpdir)
            line = progress_line(snap.get("progress"))
            if line:
                snap["msg"] = line
            result.update(snap)
            return result
        async_dir = self._remote_expand_user(self.get_shell_option("async_dir", default="~/.ansible_async"))
        deadline = time.monotonic() + args["timeout"]
        last = None
        lines = 0
        try:
            while True:
                # The module watches the job on the host for up to `interval` seconds and returns
                # at once when it ends, with the job's own result.
                watch = max(min(args["interval"], deadline - time.monotonic()), 0)
                seen = self._execute_module(module_name="hypervisor.resize.virt_migrate_wait", task_vars=task_vars,
                                            module_args={"migration_id": args["migration_id"],
                                                         "state_dir": args["state_dir"], "jid": args["jid"],
                                                         "async_dir": async_dir, "watch": watch})
                if seen.get("failed"):
                    return dict(result, **seen)
                if "job" in seen:
                    status = seen["job"]
                    break
                if time.monotonic() > deadline:
                    msg = ("the copy job %s on %s was still running after %d s; it keeps running there "
                           "(see its progress in %s/progress/)"
                           % (args["jid"], host, args["timeout"], args["state_dir"]))
                    return dict(result, failed=True, ansible_job_id=args["jid"], msg=msg)
                line = progress_line(seen.get("progress"))
                if line and line != last:
                    display.display("[%s] %s" % (host, line))
                    last = line
                    lines += 1
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        job = {k: v for k, v in status.items() if k not in ASYNC_KEYS}
        if job.get("failed") and not job.get("invocation"):
            # Not our module's answer but async_wrapper's: the module process died (killed, out of
            # memory) before it could say anything. One sentence; the raw output stays in details.
            job = {"failed": True, "details": {k: job.get(k) for k in ("msg", "data", "stderr", "cmd") if job.get(k)},
                   "msg": "the power-off and copy step on %s ended without a result (its process was killed or "
                          "crashed); the VM's record there says where it stopped, and playbooks/recover.yml "
                          "rolls it back if the role's own rollback does not" % host}
        result.update(job)
        result["progress_lines"] = lines
        return result
