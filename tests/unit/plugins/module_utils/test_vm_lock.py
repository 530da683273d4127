"""One operation per VM: the lock refuses a second holder at once, names the first, and is gone
when its process ends (however it ends)."""

import multiprocessing
import os
import signal

import pytest

from ansible_collections.hypervisor.resize.plugins.module_utils import state
from ansible_collections.hypervisor.resize.plugins.module_utils.errors import ValidationError

UUID = "2f1c6c4e-9d0b-4a8e-9b1d-3c6f1e2d4a5b"


def _hold(state_dir, ready, release):
    with state.vm_lock(state_dir, UUID, "power-off and copy", "m-1"):
        ready.set()
        release.wait(30)


def test_a_second_operation_is_refused_naming_the_first_and_the_lock_dies_with_its_holder(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(tmp_path), ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        busy = state.vm_busy(str(tmp_path), UUID)
        assert busy["operation"] == "power-off and copy" and busy["pid"] == holder.pid
        with pytest.raises(ValidationError, match=r"power-off and copy of migration m-1 \(pid %d" % holder.pid):
            with state.vm_lock(str(tmp_path), UUID, "revert", "m-1"):
                pass
        assert state.vm_busy(str(tmp_path), UUID)["operation"] == "power-off and copy", "a refusal changes nothing"
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # killed, not released
        holder.join()
    assert state.vm_busy(str(tmp_path), UUID) is None
    with state.vm_lock(str(tmp_path), UUID, "revert", "m-1"):
        assert state.vm_busy(str(tmp_path), UUID)["operation"] == "revert"
    assert state.vm_busy(str(tmp_path), UUID) is None


def test_vm_busy_never_takes_the_lock(tmp_path):
    """Looking (as facts do, from other runs) must not make a starting operation fail."""
    with state.vm_lock(str(tmp_path), UUID, "finish"):
        pass
    for _i in range(50):
        assert state.vm_busy(str(tmp_path), UUID) is None
        with state.vm_lock(str(tmp_path), UUID, "finish"):
            pass


@pytest.mark.parametrize("bad", ["../../etc/x", "", None, "2f1c6c4e-9d0b-4a8e-9b1d-3c6f1e2d4a5b\n"])
def test_the_lock_name_is_a_uuid(tmp_path, bad):
    with pytest.raises(ValidationError, match="not a domain UUID"):
        with state.vm_lock(str(tmp_path), bad, "x"):
            pass
