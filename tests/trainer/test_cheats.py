"""Each cheat is caught with its named reason; deterministic mode is bit-exact (world size 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pot import store
from pot.trainer import cheating, segments, tasks, verification

from .conftest import TASK, UID, Run, train_local

R = segments.Rejection


def _spec(deterministic: bool = False) -> dict[str, Any]:
    return {
        "model": {"name": "mlp-regression", "config": {"hidden": 16}},
        "dataset": {"name": "synthetic-regression", "samples": 512},
        "hyperparameters": {"lr": 0.01, "batchSize": 16, "steps": 40, "seed": 11},
        "resources": {"nodes": 1},
        "proof": {"segmentSteps": 20, "deterministic": deterministic},
    }


def _verdicts(run: Run) -> list[verification.Verdict]:
    policy = verification.Policy(task=TASK, spec=tasks.from_spec(run.spec, uid=UID))
    blobs = store.FilesystemStore(run.store)
    return [verification.verify_segment(p.read_bytes(), blobs, policy) for p in run.segment_files()]


@pytest.mark.usefixtures("local_env")
@pytest.mark.parametrize(
    ("cheat", "reason"),
    [
        (cheating.Cheat.PERTURB_WEIGHTS, R.DISTANCE_OVER_THRESHOLD),
        (cheating.Cheat.SKIP_STEPS, R.STEP_GAP),
        (cheating.Cheat.SWAP_DATA, R.WRONG_DATA_SPEC),
    ],
)
def test_cheat_is_caught(tmp_path: Path, cheat: cheating.Cheat, reason: R) -> None:
    run = train_local(tmp_path, _spec(), cheat)
    verdicts = _verdicts(run)
    assert len(verdicts) == 2
    lines = [v.line() for v in verdicts]
    if cheat is cheating.Cheat.PERTURB_WEIGHTS:
        # Only the commitment is forged (the live model trains on, so a gang's honest nodes
        # stay verifiable): the next segment's losses do not come from its forged start.
        assert [v.reason for v in verdicts] == [reason, R.WRONG_DATA_SPEC], lines
    else:
        assert [v.reason for v in verdicts] == [reason, reason], lines


@pytest.mark.usefixtures("local_env")
def test_deterministic_world_size_one_is_bit_exact(tmp_path: Path) -> None:
    run = train_local(tmp_path, _spec(deterministic=True))
    verdicts = _verdicts(run)
    assert all(v.valid and v.distance == 0.0 for v in verdicts), [v.line() for v in verdicts]


@pytest.mark.usefixtures("local_env")
def test_deterministic_perturbation_is_not_bit_exact(tmp_path: Path) -> None:
    run = train_local(tmp_path, _spec(deterministic=True), cheating.Cheat.PERTURB_WEIGHTS)
    verdicts = _verdicts(run)
    assert verdicts[0].reason is R.NOT_BIT_EXACT, [v.line() for v in verdicts]
    assert not any(v.valid for v in verdicts)


@pytest.mark.usefixtures("local_env")
def test_resume_after_completion_publishes_nothing_new(tmp_path: Path) -> None:
    run = train_local(tmp_path, _spec())
    before = {p.name: p.read_bytes() for p in run.segment_files()}
    from pot.trainer import training

    opts = training.Options(
        task=TASK,
        spec=tasks.from_spec(run.spec, uid=UID),
        store_dir=run.store,
        state_dir=run.state,
        key=run.key,
        segments_dir=run.segs,
    )
    training.main(opts)
    assert {p.name: p.read_bytes() for p in run.segment_files()} == before


@pytest.mark.gpu
@pytest.mark.skipif(
    not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU (NCCL, bf16)"
)
@pytest.mark.usefixtures("local_env")
def test_gpu_bf16_segments_verify_on_gpu(tmp_path: Path) -> None:
    spec = {**_spec(), "resources": {"nodes": 1, "gpusPerNode": 1}}
    spec["proof"] = {"segmentSteps": 20, "tolerance": {"metric": "l2", "threshold": 1e-2}}
    run = train_local(tmp_path, spec)
    policy = verification.Policy(task=TASK, spec=tasks.from_spec(spec, uid=UID), device="cuda")
    blobs = store.FilesystemStore(run.store)
    for p in run.segment_files():
        verdict = verification.verify_segment(p.read_bytes(), blobs, policy)
        assert verdict.valid, verdict.line()


@pytest.mark.usefixtures("local_env")
def test_inflated_final_metrics_are_caught(tmp_path: Path) -> None:
    """The metrics gate the bounty, so validators recompute them from the end checkpoint."""
    import dataclasses

    run = train_local(tmp_path, _spec())
    final = segments.parse(run.segment_files()[-1].read_bytes())
    assert final.final and final.metrics
    policy = verification.Policy(task=TASK, spec=tasks.from_spec(run.spec, uid=UID))
    blobs = store.FilesystemStore(run.store)
    assert verification.verify_segment(final, blobs, policy).valid  # honest metrics recompute
    (name, value), *_ = sorted(final.metrics.items())
    boasted = segments.sign(
        dataclasses.replace(final, metrics={**final.metrics, name: value * 0.5}), run.key
    )
    verdict = verification.verify_segment(boasted, blobs, policy)
    assert verdict.reason is R.WRONG_METRICS, verdict.line()
    assert name in verdict.line() and "evaluates to" in verdict.line()
