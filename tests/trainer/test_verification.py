"""Tampering is caught with its named reason; the CLI says so on one line."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pot import cli, keys, store
from pot.trainer import checkpoints, data, models, segments, tasks, verification

from .conftest import TASK, UID, Run

R = segments.Rejection
pytestmark = pytest.mark.slow


@pytest.fixture
def copy(mlp_run: Run, tmp_path: Path) -> Run:
    """A private copy of the shared honest run (tests damage blobs)."""
    shutil.copytree(mlp_run.root, tmp_path / "run", ignore=shutil.ignore_patterns("state"))
    return dataclasses.replace(mlp_run, root=tmp_path / "run")


def _seg(run: Run, index: int) -> segments.Segment:
    return segments.parse(run.segment_files()[index].read_bytes())


def _verify(run: Run, seg: segments.Segment | bytes, **policy: object) -> verification.Verdict:
    return verification.verify_segment(seg, store.FilesystemStore(run.store), run.policy(**policy))


def _resign(run: Run, seg: segments.Segment, **changes: object) -> segments.Segment:
    return segments.sign(dataclasses.replace(seg, **changes), run.key)  # type: ignore[arg-type]


def test_another_keys_signature(copy: Run) -> None:
    seg = _seg(copy, 1)
    forged = dataclasses.replace(seg, signature=segments.sign(seg, keys.generate()).signature)
    assert _verify(copy, forged).reason is R.BAD_SIGNATURE
    # A segment honestly signed by someone who is not the expected miner.
    theirs = segments.sign(seg, keys.generate())
    assert _verify(copy, theirs, expected_miner=copy.key.address).reason is R.BAD_SIGNATURE


def test_truncated_blob(copy: Run) -> None:
    seg = _seg(copy, 2)
    path = store.FilesystemStore(copy.store).path(seg.end_cid)
    path.write_bytes(path.read_bytes()[:100])
    verdict = _verify(copy, seg)
    assert verdict.reason is R.CORRUPT_BLOB, verdict.line()


def test_missing_blob(copy: Run) -> None:
    seg = _seg(copy, 3)
    store.FilesystemStore(copy.store).path(seg.start_cid).unlink()
    assert _verify(copy, seg).reason is R.MISSING_BLOB


def test_old_segment_replayed_under_a_new_index(copy: Run) -> None:
    old = _seg(copy, 1)
    replayed = _resign(copy, old, index=4)
    verdict = _verify(copy, replayed)
    assert verdict.reason is R.REPLAYED_INDEX, verdict.line()
    # And an index the validators already hold with a different body.
    other = _seg(copy, 2)
    used = {2: segments.digest(_resign(copy, other, losses=(0.0,) * other.steps))}
    assert _verify(copy, other, used_indices=used).reason is R.REPLAYED_INDEX


def test_wrong_task_and_hyperparameters(copy: Run) -> None:
    seg = _seg(copy, 0)
    assert _verify(copy, _resign(copy, seg, task="ns/other")).reason is R.WRONG_TASK
    spec = tasks.from_spec(
        {**copy.spec, "hyperparameters": {**copy.spec["hyperparameters"], "lr": 0.5}}, uid=UID
    )
    pol = verification.Policy(task=TASK, spec=spec)
    verdict = verification.verify_segment(seg, store.FilesystemStore(copy.store), pol)
    assert verdict.reason is R.HYPERPARAMS_MISMATCH


def test_wrong_data_spec(copy: Run) -> None:
    seg = _seg(copy, 1)
    bad = _resign(copy, seg, data_spec={**seg.data_spec, "seed": 8})
    assert _verify(copy, bad).reason is R.WRONG_DATA_SPEC
    assert (
        _verify(copy, _resign(copy, seg, data_spec={"sampler": "mine"})).reason is R.WRONG_DATA_SPEC
    )


def test_step_gaps(copy: Run) -> None:
    first, third = _seg(copy, 0), _seg(copy, 2)
    assert _verify(copy, third, previous=first).reason is R.STEP_GAP
    short = _resign(copy, third, steps=49, losses=third.losses[:49])
    assert _verify(copy, short).reason is R.STEP_GAP
    assert _verify(copy, _resign(copy, third, final=True)).reason is R.STEP_GAP


def test_broken_chain(copy: Run) -> None:
    first, second, third = _seg(copy, 0), _seg(copy, 1), _seg(copy, 2)
    assert _verify(copy, third, previous=second).valid
    forked = _resign(copy, third, start_cid=first.end_cid)
    verdict = _verify(copy, forked, previous=second)
    assert verdict.reason is R.BROKEN_CHAIN, verdict.line()


def test_segment_zero_must_start_from_the_seeds_checkpoint(copy: Run) -> None:
    """Weights from elsewhere, then honest training from them: every step replays, but the
    chain does not start where the task's seed does."""
    seg = _seg(copy, 0)
    spec = tasks.from_spec(copy.spec, uid=UID)
    blobs = store.FilesystemStore(copy.store)
    start = checkpoints.decode(blobs.get(seg.start_cid))
    for t in start.model.values():
        t.mul_(0.5)
    forged_start = blobs.put(checkpoints.encode(start))
    end, losses = verification.replay(
        models.build(spec),
        spec,
        data.DataSpec.from_record(seg.data_spec),
        start,
        steps=seg.steps,
        device=torch.device("cpu"),
    )
    forged = _resign(
        copy,
        seg,
        start_cid=forged_start,
        end_cid=blobs.put(checkpoints.encode(end)),
        losses=tuple(losses),
    )
    verdict = _verify(copy, forged)
    assert verdict.reason is R.BROKEN_CHAIN, verdict.line()
    assert "initial checkpoint" in verdict.detail
    # The honest segment 0 starts exactly there.
    assert _verify(copy, seg).valid


def test_non_finite_and_fabricated_losses(copy: Run) -> None:
    seg = _seg(copy, 1)
    nan = _resign(copy, seg, losses=(math.nan, *seg.losses[1:]))
    assert _verify(copy, nan).reason is R.NON_FINITE
    fake = _resign(copy, seg, losses=(*seg.losses[:-1], seg.losses[-1] * 0.5))
    verdict = _verify(copy, fake)
    assert verdict.reason is R.LOSS_MISMATCH, verdict.line()


def test_malformed_bytes(copy: Run) -> None:
    assert _verify(copy, b"{not json").reason is R.MALFORMED


def test_replay_outcome_is_cached_across_nodes(copy: Run) -> None:
    seg = _seg(copy, 4)
    first = _verify(copy, seg)
    # Another node of the gang claims the same steps: its own signature, same content.
    other_node = segments.sign(
        dataclasses.replace(seg, store_url="http://other:8090"), keys.generate()
    )
    second = _verify(copy, other_node)
    assert first.valid and second.valid
    assert not second.replayed


def test_cli_exit_codes(copy: Run) -> None:
    cli._register()
    runner = CliRunner()
    good = copy.segment_files()[0]
    result = runner.invoke(
        cli.app,
        [
            "proof",
            "verify",
            str(good),
            "--store",
            str(copy.store),
            "--spec",
            str(copy.verify_spec()),
            "--task-uid",
            UID,
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("valid")
    seg = _seg(copy, 0)
    bad = copy.root / "bad.json"
    bad.write_bytes(segments.to_json(_resign(copy, seg, data_spec={**seg.data_spec, "seed": 9})))
    result = runner.invoke(
        cli.app,
        [
            "proof",
            "verify",
            str(bad),
            "--store",
            str(copy.store),
            "--spec",
            str(copy.verify_spec()),
            "--task-uid",
            UID,
        ],
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [result.output.strip()]
    assert "WRONG_DATA_SPEC" in result.output


def test_data_spec_round_trip() -> None:
    spec = data.DataSpec(seed=1, dataset="x", size=10, batch_size=4, world_size=3)
    assert data.DataSpec.from_record(json.loads(json.dumps(spec.record()))) == spec
