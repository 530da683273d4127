# -*- coding: utf-8 -*-
"""Ansible callback for the benchmarks: task starts and results, with wall-clock times, as JSON lines.

Enabled only by benchmarks/run (ANSIBLE_CALLBACK_PLUGINS=benchmarks/callback,
ANSIBLE_CALLBACKS_ENABLED=bench_timeline, BENCH_TIMELINE=<file>). The normal screen output is kept.
"""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: bench_timeline
type: aggregate
short_description: task timeline as JSON lines for benchmarks/run
description: Appends one JSON line per task start and per task result to the file named by BENCH_TIMELINE.
requirements: [BENCH_TIMELINE set in the environment]
"""

# What the benchmarks read from the role's module results; everything else is left out.
KEEP = ("shutdown", "disks", "state", "grown", "msg", "migration_id", "claim", "destination", "actions", "precopy",
        "down_seconds")


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_timeline"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self._path = os.environ.get("BENCH_TIMELINE")

    def _write(self, obj):
        if not self._path:
            return
        obj["t"] = time.time()
        with open(self._path, "a") as fh:
            fh.write(json.dumps(obj, default=str) + "\n")

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._write({"ev": "task_start", "task": task.get_name()})

    def _result(self, ev, result):
        res = result._result
        out = {k: res[k] for k in KEEP if k in res}
        mig = res.get("migration")
        if isinstance(mig, dict):
            out["migration"] = {k: mig.get(k) for k in ("id", "status", "source", "dest")}
        delegated = res.get("_ansible_delegated_vars") or {}
        self._write({"ev": ev, "task": result._task.get_name(), "host": result._host.get_name(),
                     "delegated_to": delegated.get("ansible_delegated_host") or delegated.get("ansible_host"),
                     "changed": bool(res.get("changed")), "result": out})

    def v2_runner_on_ok(self, result):
        self._result("ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result("failed", result)

    def v2_runner_on_unreachable(self, result):
        self._result("unreachable", result)
