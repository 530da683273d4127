"""The one executor of a plan of steps: applies in order, undoes completed steps on failure."""

from ansible_collections.hypervisor.resize.plugins.module_utils import plan


def steps(log, fail_at=None, undo_fails=(), no_undo=(), notes=None):
    out = []
    for name in ("a", "b", "c", "d"):
        def apply(name=name):
            if name == fail_at:
                raise RuntimeError("boom at %s" % name)
            log.append("apply " + name)

        def undo(name=name):
            if name in undo_fails:
                raise RuntimeError("undo of %s broke" % name)
            log.append("undo " + name)
            return (notes or {}).get(name)
        out.append(plan.Step(name, "step " + name, apply=apply, undo=None if name in no_undo else undo,
                             leaves="%s stays" % name if name in no_undo else None))
    return out


def test_all_steps_run_in_order_and_nothing_is_undone():
    log, seen = [], []
    result = plan.execute(steps(log), on_done=lambda s: seen.append(s.name))
    assert result["ok"] and result["done"] == ["a", "b", "c", "d"] and seen == ["a", "b", "c", "d"]
    assert log == ["apply a", "apply b", "apply c", "apply d"]


def test_a_failure_undoes_the_completed_steps_last_first_and_never_the_failed_one():
    log = []
    result = plan.execute(steps(log, fail_at="c"))
    assert not result["ok"] and result["failed"] == "c" and str(result["error"]) == "boom at c"
    assert log == ["apply a", "apply b", "undo b", "undo a"]
    assert result["undone"] == ["step b", "step a"] and result["left"] == []


def test_what_cannot_be_undone_is_named_and_the_rest_is_still_undone():
    log = []
    result = plan.execute(steps(log, fail_at="d", undo_fails=("b",), no_undo=("c",), notes={"a": "a half left"}))
    assert log == ["apply a", "apply b", "apply c", "undo a"]
    assert result["undone"] == ["step a"]
    assert result["left"] == ["c stays", "step b: its undo failed (undo of b broke)", "a half left"]
    assert result["undo_failed"] == ["step b: its undo failed (undo of b broke)"]


def test_a_step_whose_undo_restores_the_state_from_before_is_undone_even_when_it_failed_half_way():
    log = []
    plan_steps = steps(log, fail_at="b")
    plan_steps[1].undo_failed_apply = True
    result = plan.execute(plan_steps)
    assert log == ["apply a", "undo b", "undo a"] and result["done"] == ["a"]


def test_a_step_that_cannot_be_noted_is_undone_with_the_rest():
    log = []

    def note(step):
        if step.name == "b":
            raise OSError("record not written")
    result = plan.execute(steps(log), on_done=note)
    assert not result["ok"] and result["failed"] == "b" and log == ["apply a", "apply b", "undo b", "undo a"]


def test_a_revert_on_the_destination_is_a_plan_read_from_what_is_there():
    from ansible_collections.hypervisor.resize.plugins.module_utils.settle import revert_destination_plan
    nothing = {"name": "web01", "domain_ours": False, "files": [], "made_dirs": [], "markers": [], "key": False,
               "claim": False}
    assert revert_destination_plan(nothing) == []
    everything = dict(nothing, domain_ours=True, files=["/i/web01.qcow2", "/i/web01.qcow2.hvresize-part"],
                      made_dirs=[{"path": "/var/lib/libvirt/swtpm/u"}], markers=["/s/.hvresize-shared-m"], key=True, claim=True)
    got = revert_destination_plan(everything)
    assert [text for _k, text, _a in got] == [
        "remove domain web01", "delete /i/web01.qcow2", "delete /i/web01.qcow2.hvresize-part",
        "delete /var/lib/libvirt/swtpm/u/", "delete marker /s/.hvresize-shared-m", "revoke transfer key",
        "release claim"]
    # The domain goes first (it uses the files), the claim last (a revert stopped half-way finds it again).
    assert got[0][0] == "domain" and got[-1][0] == "claim"


def test_a_made_directory_inside_another_goes_with_it():
    from ansible_collections.hypervisor.resize.plugins.module_utils.settle import _outermost
    top, inner = {"path": "/var/lib/libvirt/swtpm/u"}, {"path": "/var/lib/libvirt/swtpm/u/tpm2"}
    assert _outermost([top, inner]) == [top] and _outermost([inner]) == [inner]
    assert _outermost([top, {"path": "/var/lib/libvirt/swtpm/uu"}]) == [top, {"path": "/var/lib/libvirt/swtpm/uu"}]
