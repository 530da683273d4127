"""Claims on a destination: what they add to the host's own counts, and when they stop adding."""

import json
import os

import pytest

from ansible_collections.hypervisor.resize.plugins.module_utils import state
from ansible_collections.hypervisor.resize.plugins.module_utils.errors import ValidationError

MID = ["0b6f0c7e-4c1e-4a7b-9b55-2a8f1f0e6d1%d" % i for i in range(4)]


def claim(state_dir, mid, status, vcpus=2, memory_mb=256, disk_bytes=1000, received=None):
    state.write_record(state_dir, {"id": mid, "status": status, "instance": "vm-" + mid[-1],
                                   "claim": {"vcpus": vcpus, "memory_mb": memory_mb, "disk_bytes": disk_bytes}})
    for nbytes in received or []:
        with open(os.path.join(state.migration_dir(state_dir, mid), "received.jsonl"), "a") as fh:
            fh.write(json.dumps({"path": "/x", "sha256": "0" * 64, "bytes": nbytes}) + "\n")


def test_open_claims_add_until_the_domain_is_defined_here(tmp_path):
    d = str(tmp_path)
    claim(d, MID[0], "pre-migrating")                        # waiting for its copy: all of it
    claim(d, MID[1], "pre-migrating", received=[600])        # copy landed in part: the rest of the disk
    claim(d, MID[2], "finished")                             # defined here: libvirt counts it
    claim(d, MID[3], "confirmed")                            # closed: nothing
    assert state.claimed_totals(d) == {"claimed_vcpus": 4, "claimed_memory_mb": 512,
                                       "claimed_disk_bytes": 1000 + 400}


def test_received_more_than_claimed_never_goes_negative(tmp_path):
    d = str(tmp_path)
    claim(d, MID[0], "pre-migrating", disk_bytes=100, received=[4096])
    assert state.claimed_totals(d)["claimed_disk_bytes"] == 0


def test_the_maintenance_marker_round_trips_and_a_damaged_one_still_means_maintenance(tmp_path):
    d = str(tmp_path)
    assert state.read_maintenance(d) is None
    state.write_maintenance(d, "drain", "0b6f5a1e-8d2b-4b7e-9a51-0c2d3e4f5a6b")
    got = state.read_maintenance(d)
    assert got["reason"] == "drain" and got["drain_id"] == "0b6f5a1e-8d2b-4b7e-9a51-0c2d3e4f5a6b" and got["since"]
    (tmp_path / "maintenance.json").write_text('{"drain_id": "../../etc", "reason": 5')
    got = state.read_maintenance(d)
    assert got["drain_id"] is None and got["reason"].startswith("unreadable maintenance marker")
    (tmp_path / "maintenance.json").write_text('{"drain_id": "../../etc", "reason": ["x"]}')
    assert state.read_maintenance(d) == {"since": None, "reason": None, "drain_id": None, "returning": False}
    state.write_maintenance(d, "drain", "0b6f5a1e-8d2b-4b7e-9a51-0c2d3e4f5a6b", returning=True, since="t")
    assert state.read_maintenance(d)["returning"] is True and state.read_maintenance(d)["since"] == "t"
    assert state.clear_maintenance(d) is True and state.read_maintenance(d) is None
    assert state.clear_maintenance(d) is False


def test_maintenance_moves_present_returning_absent_and_check_mode_writes_nothing(tmp_path):
    d, drain, other = str(tmp_path), "0b6f5a1e-8d2b-4b7e-9a51-0c2d3e4f5a6b", "1c7a6b2f-9e3c-4c8f-8b62-1d3e4f5a6b7c"
    assert state.set_maintenance(d, "present", "drain", drain, check=True)[0] is True
    assert state.read_maintenance(d) is None
    changed, before, after = state.set_maintenance(d, "present", "drain", drain)
    assert changed and before is None and after["drain_id"] == drain and not after["returning"]
    since = after["since"]
    # A drain run again keeps its first id and its start.
    assert state.set_maintenance(d, "present", "drain", other, keep_drain_id=True)[0] is False
    changed, _b, after = state.set_maintenance(d, "returning")
    assert changed and after["returning"] and after["drain_id"] == drain and after["since"] == since
    changed, _b, after = state.set_maintenance(d, "present", "drain", other, keep_drain_id=True)
    assert changed and after["drain_id"] == drain and not after["returning"] and after["since"] == since
    changed, before, after = state.set_maintenance(d, "absent")
    assert changed and before["drain_id"] == drain and after is None and state.read_maintenance(d) is None
    with pytest.raises(ValidationError, match="not in maintenance from a drain"):
        state.set_maintenance(d, "returning")
    with pytest.raises(ValidationError, match="is not a migration id"):
        state.set_maintenance(d, "present", "x", "../etc")
