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


def test_render_lists_the_settlements_payouts_and_slashes(make_example: Any) -> None:
    task = make_example("task.yaml", ns="farm")
    miner, validator, cheat = "0x" + "a" * 40, "0x" + "b" * 40, "0x" + "c" * 40
    task["status"] = {
        "phase": "Succeeded",
        "settlement": {
            "txHash": "0x" + "1" * 64,
            "block": 12,
            "payouts": [
                {"address": miner, "amount": "9500", "role": "miner"},
                {"address": validator, "amount": "500", "role": "validator"},
            ],
            "slashed": {cheat: "1000"},
        },
    }
    text = task_cli.render(task)
    assert f"settlement: tx 0x{'1' * 64} in block 12" in text
    assert f"    miner      {miner}  9500 wei" in text
    assert f"    validator  {validator}  500 wei" in text
    assert f"    slashed    {cheat}  1000 wei" in text


def test_pot_task_status_is_registered() -> None:
    cli._register()
    result = CliRunner().invoke(cli.app, ["task", "status", "--help"])
    assert result.exit_code == 0 and "NAME" in result.output.upper()
