"""``spec.model.module``: a user's builder trains under torchrun and replays; bad ones fail clearly.

The model is ``sinewave.py`` beside this file, which docs/trainer.md shows
verbatim (checked here), so the documented example is the one that trains.
"""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pot import errors, store
from pot.trainer import models, segments, tasks, verification

from .conftest import ROOT, UID, new_run, run_cli_alone, torchrun

HERE = Path(__file__).resolve().parent
DOC = ROOT / "docs" / "trainer.md"


def _spec(module: str = "sinewave:build") -> dict[str, Any]:
    return {
        "model": {"module": module, "config": {"width": 32}},
        "dataset": {"name": "synthetic-regression", "samples": 1024},
        "hyperparameters": {"lr": 0.01, "batchSize": 16, "steps": 120, "seed": 5},
        "resources": {"nodes": 1},
        "proof": {"segmentSteps": 40},
    }


@pytest.mark.slow
def test_user_model_trains_under_torchrun_and_every_segment_verifies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = new_run(tmp_path, _spec())
    torchrun(run, pythonpath=HERE)
    segs = [segments.parse(p.read_bytes()) for p in run.segment_files()]
    assert [s.index for s in segs] == [0, 1, 2]
    assert segs[0].world == segments.World(nnodes=1, nproc_per_node=2)
    losses = [x for s in segs for x in s.losses]
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10, losses
    assert segs[-1].final and segs[-1].metrics["evalLoss"] < losses[0]
    # The validator imports the same module to replay (the image must ship it).
    monkeypatch.syspath_prepend(str(HERE))
    verification.clear_caches()
    policy = run.policy()
    blobs = store.FilesystemStore(run.store)
    previous = None
    for seg in segs:
        policy.previous = previous
        verdict = verification.verify_segment(seg, blobs, policy)
        assert verdict.valid and verdict.replayed, (seg.index, verdict.line())
        previous = seg


def test_batchnorm_buffers_replay_as_ddp_keeps_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DDP broadcasts rank 0's buffers before every forward. The replay ran every
    rank's micro-batch through one set of buffers (num_batches_tracked grew by the
    world size per step, NOT_BIT_EXACT), and a node's local rank 0 committed its own
    rank's last update: honest BatchNorm models were refused at world size 2."""
    spec = _spec("batchnorm:build")
    spec["dataset"]["samples"] = 256
    spec["hyperparameters"].update(steps=6, batchSize=8)
    spec["proof"]["segmentSteps"] = 3
    run = new_run(tmp_path, spec)
    torchrun(run, pythonpath=HERE)
    segs = [segments.parse(p.read_bytes()) for p in run.segment_files()]
    assert [s.index for s in segs] == [0, 1]
    monkeypatch.syspath_prepend(str(HERE))
    verification.clear_caches()
    policy = run.policy()
    blobs = store.FilesystemStore(run.store)
    for seg in segs:
        verdict = verification.verify_segment(seg, blobs, policy)
        assert verdict.valid and verdict.replayed, (seg.index, verdict.line())


def test_docs_show_the_tested_example_verbatim() -> None:
    doc = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.DOTALL)
    assert (HERE / "sinewave.py").read_text(encoding="utf-8") in blocks
    assert '"sinewave:build"' in doc


@pytest.fixture
def bad_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An importable module of broken builders (a fresh name per test)."""
    name = f"pot_bad_builders_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            NOT_CALLABLE = 3

            def returns_a_dict(*, config, dataset, seed):
                return {"model": None}

            def raises(*, config, dataset, seed):
                raise ValueError("boom")
            """
        )
    )
    (tmp_path / "pot_broken_import.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "pot_broken_import", raising=False)
    return name


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("no_such_module_xyz:build", r"cannot import 'no_such_module_xyz' \(ModuleNotFoundError"),
        ("pot_broken_import:build", r"cannot import 'pot_broken_import'.*no_such_dependency_xyz"),
        ("sinewave", r"is not of the form 'pkg.mod:build'"),
        ("{bad}:missing", r"module '{bad}' has no 'missing'"),
        ("{bad}:NOT_CALLABLE", r"'{bad}:NOT_CALLABLE' is a int, not a callable"),
        ("{bad}:returns_a_dict", r"returned dict, not pot.trainer.models.Built"),
        ("{bad}:raises", r"raised ValueError: boom"),
    ],
)
def test_bad_builders_fail_naming_the_field(bad_module: str, entry: str, message: str) -> None:
    spec = tasks.from_spec(_spec(entry.format(bad=bad_module)), uid=UID)
    with pytest.raises(errors.ConfigError, match=message.format(bad=bad_module)) as info:
        models.build(spec)
    assert str(info.value).startswith("spec.model.module: ")


@pytest.mark.slow
def test_trainer_prints_one_line_for_a_bad_module(tmp_path: Path) -> None:
    run = new_run(tmp_path, _spec("no_such_module_xyz:build"))
    out = run_cli_alone(run)
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().splitlines() == [
        "error: spec.model.module: cannot import 'no_such_module_xyz' "
        "(ModuleNotFoundError: No module named 'no_such_module_xyz')"
    ]
    assert not run.segment_files()
