"""``pot chain``: what a person types is checked before any chain is asked.

No chain runs here: these refusals must come before the first RPC call (the URL points at
a port nothing listens on, so a command that got that far would fail differently).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from pot import ids, keys
from pot.settlement import cli

NOWHERE = "http://127.0.0.1:9"
CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli.app, list(args))


def said(out: Result) -> str:
    """What the command printed and raised, on one line (usage errors come in a box)."""
    return " ".join(f"{out.output} {out.exception or ''}".replace("│", " ").split())


@pytest.mark.parametrize(
    ("task", "why"),
    [
        ("pot-system/MLP_demo", "'MLP_demo' is not a TrainingTask name"),
        ("pot-system/1st", "'1st' is not a TrainingTask name"),
        ("pot-system/" + "a" * 64, "is not a TrainingTask name"),
        ("Pot/mlp-demo", "namespace 'Pot' is not a Kubernetes namespace"),
        ("mlp-demo", "is not <namespace>/<name>"),
    ],
)
@pytest.mark.parametrize("command", ["fund", "reclaim", "balances"])
def test_a_task_id_the_operator_could_never_run_is_refused(
    tmp_path: Path, command: str, task: str, why: str
) -> None:
    key_file = tmp_path / "funder.key"
    key_file.write_text(keys.generate().secret.hex())
    args = [command, "--rpc", NOWHERE, "--contract", CONTRACT, "--task", task]
    args += {"fund": ["--key-file", str(key_file), "--amount", "5"], "balances": []}.get(
        command, ["--key-file", str(key_file)]
    )
    out = invoke(*args)
    assert out.exit_code == 2, out.output
    text = said(out)
    assert "--task" in text and why in text, text
    assert "unreachable" not in text


def test_task_ids_the_operator_runs_pass() -> None:
    for task in ("pot-system/mlp-demo", "0team/a", "ns/" + "a" * 63):
        assert ids.check_task_key(task) == task
