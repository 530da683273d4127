"""The copy's progress line on the controller (plugins/action/virt_migrate_wait.py), from the
progress file the source writes (module_utils/_transfer/progress.py)."""

import json

from ansible_collections.hypervisor.resize.plugins.action.virt_migrate_wait import progress_line
from ansible_collections.hypervisor.resize.plugins.module_utils._transfer.progress import Progress

MIB = 1024 * 1024


def test_the_pre_copy_s_progress_has_a_rate_and_says_the_vm_runs(tmp_path):
    now = [10.0]
    path = str(tmp_path / "m.json")
    p = Progress(path, [{"allocation": 40 * MIB}], every=1.0, clock=lambda: now[0], wall=lambda: 1.0)
    p.set_phase("pre-copying while the VM runs (round 2)")
    p.next_disk("/i/vm.raw.hvresize-delta1")
    now[0] += 2.0
    p.update(20 * MIB)
    line = progress_line(json.load(open(path)))
    assert line == ("pre-copying while the VM runs (round 2) disk 1/1 /i/vm.raw.hvresize-delta1: 20.0 MiB of 40.0 MiB "
                    "(50.0%), 10.0 MiB/s, ETA 0:00:02")
    p.set_phase("shutting down")
    assert progress_line(json.load(open(path))) == "shutting down"
    p.close()
