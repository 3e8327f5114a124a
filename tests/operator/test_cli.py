"""``pot task status``: the rendering, and the command group's registration."""

from __future__ import annotations

from typing import Any

from typer.testing import CliRunner

from pot import cli
from pot.operator import cli as task_cli


def test_render_shows_phase_reason_progress_and_conditions(make_example: Any) -> None:
    task = make_example("task.yaml", ns="farm")
    task["status"] = {
        "phase": "Scheduling",
        "reason": "InsufficientCapacity",
        "message": "gang of 2 pods: only 1 fit now",
        "restarts": 1,
        "progress": {"step": 50, "totalSteps": 200, "segmentsCommitted": 2, "segmentsVerified": 1},
        "conditions": [
            {
                "type": "GangScheduled",
                "status": "False",
                "reason": "InsufficientCapacity",
                "message": "m",
            }
        ],
    }
    text = task_cli.render(task)
    assert "TrainingTask farm/mlp-demo" in text
    assert "phase:     Scheduling (InsufficientCapacity)" in text
    assert "step 50/200" in text and "restarts 1" in text
    assert "GangScheduled  False   InsufficientCapacity: m" in text


def test_pot_task_status_is_registered() -> None:
    cli._register()
    result = CliRunner().invoke(cli.app, ["task", "status", "--help"])
    assert result.exit_code == 0 and "NAME" in result.output.upper()
