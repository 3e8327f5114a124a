"""``pot proof verify`` on a hand run: the world the gang ran is given on the command line.

A hand run under ``torchrun --nproc-per-node 2`` keeps its spec (no ``gpusPerNode``) in
``STORE/specs/``; read as the operator launches it, that spec means one worker per node,
so without ``--nproc-per-node`` every segment is ``WRONG_WORLD``.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner, Result

from pot import cli

from .conftest import UID, Run

pytestmark = pytest.mark.slow

cli._register()


def verify(run: Run, *extra: str, uid: str | None = UID) -> Result:
    segment = str(run.segment_files()[0])
    given = ["--task-uid", uid] if uid is not None else []
    return CliRunner().invoke(
        cli.app, ["proof", "verify", segment, "--store", str(run.store), *given, *extra]
    )


def test_hand_run_verifies_with_its_nproc_per_node(mlp_run: Run) -> None:
    assert mlp_run.nproc == 2
    out = verify(mlp_run)
    assert out.exit_code == 1
    assert "WRONG_WORLD" in out.output
    out = verify(mlp_run, "--nproc-per-node", "2")
    assert out.exit_code == 0, out.output
    assert out.output.startswith("valid")
    out = verify(mlp_run, "--nproc-per-node", "0")
    assert out.exit_code == 2
    assert "--nproc-per-node" in out.output


def test_the_task_uid_is_required_and_decides(
    mlp_run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run seed derives from the TrainingTask's uid: without one the CLI says which
    option it needs; with another task's uid the chain is not this task's."""
    monkeypatch.delenv("POT_TASK_UID", raising=False)
    out = verify(mlp_run, "--nproc-per-node", "2", uid=None)
    assert out.exit_code != 0
    assert "--task-uid" in str(out.exception) or "--task-uid" in out.output
    monkeypatch.setenv("POT_TASK_UID", UID)
    out = verify(mlp_run, "--nproc-per-node", "2", uid=None)
    assert out.exit_code == 0, out.output
    # Its data spec carries this task's run seed, not the other task's.
    out = verify(mlp_run, "--nproc-per-node", "2", uid="uid-of-another-task")
    assert out.exit_code == 1
    assert "WRONG_DATA_SPEC" in out.output
