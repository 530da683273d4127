# -*- coding: utf-8 -*-
# Copyright: hypervisor.resize contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A resize as a plan of steps, and the one executor that runs it. Private to hypervisor.resize.

A step says what it does (`text`), does it (`apply`) and, where that can be undone, undoes it
(`undo`, which may return what it could not undo); a step that cannot be undone says what it
leaves (`leaves`). The plan is computed first, from facts alone: check mode returns its texts and
nothing runs. `execute` applies the steps in
order; when one fails it undoes the completed ones in reverse order and says precisely what was
undone and what is left. Pure: the steps bring their own I/O.
"""

from __future__ import annotations


class Step:
    """`undo_failed_apply`: the undo puts things back whatever part of `apply` ran (it sets the
    state from before rather than reversing the apply), so it also runs when `apply` itself fails."""

    def __init__(self, name, text, apply=None, undo=None, leaves=None, undo_failed_apply=False):
        self.name = name
        self.text = text
        self.apply = apply
        self.undo = undo
        self.leaves = leaves
        self.undo_failed_apply = undo_failed_apply

    def __repr__(self):
        return "Step(%r)" % self.name


def execute(steps, on_done=None):
    """Apply `steps` in order. Returns {ok, done: [names], failed: name or None, error: the exception
    or None, undone: [texts], left: [texts], undo_failed: [texts]}. On a failure, every completed
    step is undone, last first (and the failed one, if its undo allows it); an undo that fails is in
    `undo_failed` and `left`, a step that has none is in `left` (with `leaves`). `on_done(step)`
    runs after each step that completed (e.g. to note it in the record); if it fails, so did the step."""
    done = []
    for step in steps:
        try:
            step.apply()
        except Exception as exc:  # the executor's one job: whatever failed, undo what was done
            return _failed(step, exc, done + ([step] if step.undo_failed_apply else []))
        done.append(step)
        if on_done is not None:
            try:
                on_done(step)
            except Exception as exc:  # the step ran but could not be noted: undo it with the rest
                return _failed(step, exc, done)
    return {"ok": True, "done": [s.name for s in done], "failed": None, "error": None, "undone": [], "left": [],
            "undo_failed": []}


def _failed(step, exc, to_undo):
    undone, left, undo_failed = rollback(to_undo)
    return {"ok": False, "done": [s.name for s in to_undo if s is not step], "failed": step.name, "error": exc,
            "undone": undone, "left": left, "undo_failed": undo_failed}


def rollback(done):
    """Undo completed steps, last first: ([texts undone], [texts of what is left], [texts of the
    undos that failed])."""
    undone, left, undo_failed = [], [], []
    for step in reversed(done):
        if step.undo is None:
            if step.leaves:
                left.append(step.leaves)
            continue
        try:
            note = step.undo()
            undone.append(step.text)
            if note:  # undone as far as it can be; this much is left
                left.append(note)
        except Exception as exc:  # keep undoing the others; say what this one left
            text = "%s: its undo failed (%s)" % (step.text, exc)
            left.append(text)
            undo_failed.append(text)
    return undone, left, undo_failed
