"""A proof chain belongs to one TrainingTask object: twins do not share it.

Two tasks with the same spec and seed (here both on the default seed 0) used to train
the same initial weights on the same data order, so their checkpoints, content-addressed,
were the same blobs. A miner assigned to task Y could then sign task X's checkpoints as
its own segments of Y, and the validators' replay of Y from ``startCid`` reached the same
``endCid``: paid work that was never done. The same held for a task deleted and re-created
under its name. Now every seeded quantity derives from the run seed
``task_seed(seed, uid)`` with the uid of the operator's registration, so X's chain does
not replay as Y's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pot import errors, keys, store
from pot.trainer import checkpoints, segments, tasks, verification
from pot.validator import app as vapp
from pot.validator import auditing, pbft
from pot.validator import messages as m
from tests.validator import node_kit

from .conftest import Run, train_local

R = segments.Rejection
TASK_X, UID_X = "farm/x", "0b7f3c52-6a8e-4d1e-9a57-1f3d2c4b5a60"
TASK_Y, UID_Y = "farm/y", "c41d9e07-2b3a-4f68-8e15-7a6b5c4d3e21"


def _spec() -> dict[str, Any]:
    """Small, deterministic, and on the default seed (no ``seed`` field)."""
    return {
        "model": {"name": "mlp-regression", "config": {"hidden": 8, "depth": 1, "features": 4}},
        "dataset": {"name": "synthetic-regression", "samples": 64},
        "hyperparameters": {"lr": 0.01, "batchSize": 4, "steps": 4},
        "resources": {"nodes": 1},
        "proof": {"segmentSteps": 2, "deterministic": True, "sampleRate": 1.0},
        "reward": {"pool": "1000", "minerStake": "10"},
    }


# --- the derivation ----------------------------------------------------------------------


def test_the_run_seed_is_stable_and_separates_task_objects() -> None:
    a = tasks.task_seed(0, UID_X)
    assert a == tasks.task_seed(0, UID_X)  # a pure function: trainer and validators agree
    assert 0 <= a < 2**63
    assert a != tasks.task_seed(0, UID_Y)  # twins: same seed, other objects
    assert a != tasks.task_seed(1, UID_X)  # the hyperparameter still matters
    # Unambiguous encoding: moving a digit between the two inputs is another input.
    assert tasks.task_seed(1, "23") != tasks.task_seed(12, "3")
    spec = tasks.from_spec(_spec(), uid=UID_X)
    assert spec.seed == 0 and spec.run_seed == a
    assert spec.hyperparams_hash() == tasks.from_spec(_spec(), uid=UID_Y).hyperparams_hash()


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**64), uids=st.lists(st.uuids().map(str), min_size=2, max_size=8))
def test_distinct_uids_give_distinct_run_seeds(seed: int, uids: list[str]) -> None:
    unique = set(uids)
    seeds = {tasks.task_seed(seed, u) for u in unique}
    assert len(seeds) == len(unique)
    assert all(0 <= s < 2**63 for s in seeds)


def test_nothing_is_built_or_replayed_without_a_uid() -> None:
    spec = tasks.from_spec(_spec())  # readable (the validators check specs at the door)
    with pytest.raises(errors.ConfigError, match=r"^uid: required"):
        _ = spec.run_seed
    with pytest.raises(ValueError, match=r"spec\.uid"):
        verification.Policy(task=TASK_X, spec=spec)
    for bad in ("", " padded", "u" * 129):
        with pytest.raises(errors.ConfigError, match=r"^uid: "):
            tasks.from_spec(_spec(), uid=bad)


def test_a_node_does_not_resume_another_task_objects_state(tmp_path: Path) -> None:
    """A task re-created under a deleted one's name may find its old state (a PVC, a
    reused --state-dir): those checkpoints are of another run seed and never verify."""
    from pot.trainer import training

    path = tmp_path / "state.json"
    training.NodeState(path, "0xabc", UID_X).commit(2, "bafkold", None)
    assert training.NodeState(path, "0xabc", UID_X).step == 2
    with pytest.raises(errors.ConfigError, match=f"uid '{UID_X}', not '{UID_Y}'"):
        training.NodeState(path, "0xabc", UID_Y)


# --- a real chain of X, presented as Y ---------------------------------------------------


def _registered() -> vapp.App:
    """A validator's replicated state with X and Y registered (same spec, own uids)."""
    app = node_kit.app_of_four()
    for seq, (task, uid) in enumerate(((TASK_X, UID_X), (TASK_Y, UID_Y)), start=1):
        op = vapp.op("register", task=task, spec=_spec(), uid=uid)
        ctx = pbft.ExecContext(seq=seq, view=0, batch_digest=bytes(32))
        assert b'"ok":true' in app.execute(m.Request("c", seq, op), ctx)
    return app


def _audit(cache: Path, app: vapp.App, task: str, segment: segments.Segment) -> tuple[bool, str]:
    """What a replica does with a segment it audits: ``Auditing.schedule`` with the task's
    registered record (spec and uid), replayed by the daemon's ``ReplayAuditor``."""
    verdicts: list[tuple[bool, str]] = []

    async def done(_task: str, _seg: Any, valid: bool, reason: str) -> None:
        verdicts.append((valid, reason))

    async def run() -> None:
        runner = auditing.Auditing(auditing.ReplayAuditor(cache), max_concurrent=1, done=done)
        runner.schedule(task, app.tasks[task], segment.record())
        await asyncio.gather(*runner.tasks)

    asyncio.run(run())
    (verdict,) = verdicts
    return verdict


def _as_y(seg: segments.Segment, miner: keys.Key, **changes: Any) -> segments.Segment:
    """X's segment signed by Y's miner as its own segment of Y."""
    fields = {"task": TASK_Y, "miner": miner.address, **changes}
    return segments.sign(dataclasses.replace(seg, **fields), miner)


def _reseeded(blobs: store.FilesystemStore, cid: str, seed: int) -> str:
    """X's checkpoint with its header's RNG seed rewritten (new bytes, new CID)."""
    ckpt = checkpoints.decode(blobs.get(cid))
    ckpt.seed = seed
    return blobs.put(checkpoints.encode(ckpt))


@pytest.mark.slow
@pytest.mark.usefixtures("local_env")
def test_a_twin_tasks_chain_does_not_verify_as_this_task(tmp_path: Path) -> None:
    verification.clear_caches()
    run_x: Run = train_local(tmp_path / "x", _spec(), task=TASK_X, uid=UID_X)
    first, second = (segments.parse(p.read_bytes()) for p in run_x.segment_files()[:2])
    # The validator already holds the blobs (its cache is a copy of X's store), as after
    # fetching them from the storeUrl the miner of Y would serve them from.
    cache = tmp_path / "validator-cache"
    shutil.copytree(run_x.store, cache)
    app = _registered()
    y_seed = tasks.task_seed(0, UID_Y)
    y_data = {**first.data_spec, "seed": y_seed}  # a miner knows its task's uid

    # Honest: X's segments verify as X's, bit for bit (deterministic mode).
    assert _audit(cache, app, TASK_X, first) == (True, "")
    assert _audit(cache, app, TASK_X, second) == (True, "")
    assert first.data_spec["seed"] == tasks.task_seed(0, UID_X)

    miner_y = keys.generate()
    # X's segment 0 re-signed as Y's: its data order is X's...
    assert _audit(cache, app, TASK_Y, _as_y(first, miner_y)) == (False, "WRONG_DATA_SPEC")
    # ...and with Y's data spec written in, it does not start where Y's run seed does.
    assert _audit(cache, app, TASK_Y, _as_y(first, miner_y, data_spec=y_data)) == (
        False,
        "BROKEN_CHAIN",
    )
    # A later segment of X, audited alone: its checkpoints carry X's run seed.
    assert _audit(cache, app, TASK_Y, _as_y(second, miner_y, data_spec=y_data)) == (
        False,
        "CORRUPT_BLOB",
    )
    # The same checkpoints re-encoded under Y's run seed: the replay itself feeds Y's data
    # and lands elsewhere than X's end.
    blobs = store.FilesystemStore(cache)
    forged = _as_y(
        second,
        miner_y,
        data_spec=y_data,
        start_cid=_reseeded(blobs, second.start_cid, y_seed),
        end_cid=_reseeded(blobs, second.end_cid, y_seed),
    )
    assert _audit(cache, app, TASK_Y, forged) == (False, "WRONG_DATA_SPEC")

    # The library entry point says why, naming the task object.
    policy = verification.Policy(task=TASK_Y, spec=tasks.from_spec(_spec(), uid=UID_Y))
    verdict = verification.verify_segment(_as_y(first, miner_y, data_spec=y_data), blobs, policy)
    assert verdict.reason is R.BROKEN_CHAIN
    assert UID_Y in verdict.detail and "initial checkpoint" in verdict.detail
