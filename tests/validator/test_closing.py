"""A task whose allocation is computed keeps a summary, not its segment records: the view
``GET /v1/tasks`` serves is unchanged, snapshots stop growing with every segment ever
committed, late requests are refused as TASK_CLOSED, and a state saved before closing
existed still reads the same. Pure: the app alone, fed committed requests."""

from __future__ import annotations

import pytest

from pot import keys
from pot.validator import app as vapp
from pot.validator import closing
from tests.validator.test_app_restore import _run, made, scenario
from tests.validator.test_chaining import TASK


def test_a_closed_task_keeps_its_view_and_drops_its_segments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    closed = scenario()  # two ranks of 12 segments; allocated (and so closed)
    with monkeypatch.context() as mp:
        mp.setattr(closing, "close", lambda t: None)
        kept = vapp.App(closed.app.v)
        for i, op in enumerate(closed.ops):
            _run(kept, i, op)
    assert closed.task["segments"] == {} and len(kept.tasks[TASK]["segments"]) == 24
    view = closed.app.view(TASK)
    assert view is not None and view == kept.view(TASK)
    assert view["phase"] == "Allocated" and view["progress"]["segmentsCommitted"] == 24
    assert closed.app.allocation_json(TASK) == kept.allocation_json(TASK)
    assert 3 * len(closed.app.snapshot()) < len(kept.snapshot())
    older = vapp.App(closed.app.v)  # a state saved before closing existed
    older.restore(kept.snapshot())
    assert older.view(TASK) == view


def test_late_requests_to_a_closed_task_are_refused_as_closed() -> None:
    closed = scenario()
    late = made(keys.generate(), 0)
    assert closed.submit(late) == {"ok": False, "reason": "TASK_CLOSED"}
    assert closed.verdicts(late, True) == {"ok": False, "reason": "TASK_CLOSED"}
    assert closed.task["segments"] == {}
