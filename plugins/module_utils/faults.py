# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fault injection points, for proving the rollback on a real test bed. Private.

When the environment variable HVRESIZE_FAIL_AT names a step, that step fails right after doing
its work (so the rollback has something real to undo). The role sets it from the testing-only
variable resize_test_fail_at; nothing sets it in normal use.
"""

from __future__ import annotations

import os

from .errors import ResizeError

STEPS = ("claim", "precopy", "shutdown", "copy", "grow", "define", "start")


def checkpoint(step, **where):
    if os.environ.get("HVRESIZE_FAIL_AT") == step:
        raise ResizeError("injected failure after step %s (HVRESIZE_FAIL_AT=%s)" % (step, step), **where)
