"""A miner's forged checkpoints, optimizer state, world and slow store cost a validator
little and end in a named rejection, never a crash, an audit error or a stalled lock."""

from __future__ import annotations

import dataclasses
import json
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from pot import errors, keys, store
from pot.trainer import checkpoints, models, segments, tasks, verification

from .conftest import TASK, UID, solo_start, train_local

R = segments.Rejection


def _spec(**proof: Any) -> dict[str, Any]:
    return {
        "model": {"name": "mlp-regression", "config": {"hidden": 8, "depth": 1, "features": 4}},
        "dataset": {"name": "synthetic-regression", "samples": 64},
        "hyperparameters": {"lr": 0.01, "batchSize": 4, "steps": 6, "seed": 3},
        "resources": {"nodes": 1},
        "proof": {"segmentSteps": 2, **proof},
    }


@dataclasses.dataclass
class Chain:
    blobs: store.FilesystemStore
    key: keys.Key
    segs: list[segments.Segment]

    def ckpt(self, cid: str) -> checkpoints.Checkpoint:
        return checkpoints.decode(self.blobs.get(cid))

    def forge(self, index: int, **changes: Any) -> segments.Segment:
        return segments.sign(dataclasses.replace(self.segs[index], **changes), self.key)


@pytest.fixture
def chain(tmp_path: Path) -> Chain:
    """An honest world-size-1 chain of 3 segments, made by replaying (no torchrun)."""
    spec = tasks.from_spec(_spec(), uid=UID)
    built = models.build(spec)
    blobs, key = store.FilesystemStore(tmp_path / "store"), keys.generate()
    opt, start, dspec = solo_start(spec, built)
    start_cid = blobs.put(checkpoints.encode(start))
    segs = []
    for i in range(spec.segments):
        end, losses = verification.replay(
            built, spec, dspec, start, steps=2, device=torch.device("cpu")
        )
        metrics: dict[str, float] = {}
        if end.step == spec.steps:
            checkpoints.restore(
                end, built.model, checkpoints.make_optimizer(spec, opt.param_groups)
            )
            metrics = built.evaluate(built.model)
        end_cid = blobs.put(checkpoints.encode(end))
        seg = segments.Segment(
            task=TASK,
            index=i,
            node_rank=0,
            miner="0x" + "00" * 20,
            start_step=2 * i,
            steps=2,
            start_cid=start_cid,
            end_cid=end_cid,
            data_spec=dspec.record(),
            hyperparams_hash=spec.hyperparams_hash(),
            losses=tuple(losses),
            world=segments.World(nnodes=1, nproc_per_node=1),
            final=end.step == spec.steps,
            metrics=metrics,
        )
        segs.append(segments.sign(seg, key))
        start, start_cid = end, end_cid
    verification.clear_caches()
    return Chain(blobs=blobs, key=key, segs=segs)


def _verify(
    c: Chain, seg: segments.Segment, raw: dict[str, Any] | None = None, **kw: Any
) -> verification.Verdict:
    policy = verification.Policy(task=seg.task, spec=tasks.from_spec(raw or _spec(), uid=UID), **kw)
    return verification.verify_segment(seg, c.blobs, policy)


def test_honest_chain_verifies(chain: Chain) -> None:
    assert all(_verify(chain, s).valid for s in chain.segs)


# --- decoding untrusted bytes -----------------------------------------------------------


def _blob(header: dict[str, Any] | bytes, body: bytes = b"") -> bytes:
    head = header if isinstance(header, bytes) else tasks.canonical_json(header)
    return checkpoints.MAGIC + struct.pack("<I", len(head)) + head + body


def _header(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "format": checkpoints.FORMAT,
        "step": 1,
        "optimizerSteps": 1,
        "rng": {"seed": 0},
        "tensors": entries,
        "optimizerState": {},
    }


def test_deeply_nested_header_is_refused_not_a_crash() -> None:
    import py_ecc  # noqa: F401  (it raises the recursion limit, as in a validator)

    with pytest.raises(errors.ProofError, match="nests deeper"):
        checkpoints.decode(_blob(b"[" * 100_000))


def test_deeply_nested_segment_is_refused_not_a_crash() -> None:
    """1 MB of ``[`` (within MAX_BYTES) overflowed json.loads's C stack once py_ecc had
    raised the recursion limit: ``pot proof verify`` on a miner's file died of SIGSEGV."""
    code = (
        "import py_ecc\n"
        "from pot.trainer import segments\n"
        "for doc in (b'[' * 1_000_000, '{\"a\":' * 200_000):\n"
        "    try:\n"
        "        segments.parse(doc)\n"
        "    except segments.Rejected as exc:\n"
        "        assert exc.reason is segments.Rejection.MALFORMED, exc\n"
        "        print('refused', exc.detail)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.count("refused JSON nested deeper") == 2, done.stdout


def test_overlapping_tensors_are_refused() -> None:
    """400 entries over the same 4 MiB decoded to 1.6 GB of copies."""
    n = 1 << 10
    entries = [
        {"name": f"model/t{i}", "dtype": "float32", "shape": [n], "offset": 0, "nbytes": 4 * n}
        for i in range(4)
    ]
    with pytest.raises(errors.ProofError, match="overlapping"):
        checkpoints.decode(_blob(_header(entries), bytes(4 * n)))


@pytest.mark.parametrize("shape", [[-1, -4], [2.0, 2], [True, 4]])
def test_bad_dimensions_are_refused(shape: list[Any]) -> None:
    entry = {"name": "model/w", "dtype": "float32", "shape": shape, "offset": 0, "nbytes": 16}
    with pytest.raises(errors.ProofError):
        checkpoints.decode(_blob(_header([entry]), bytes(16)))


def test_trailing_bytes_and_stray_references_are_refused(chain: Chain) -> None:
    good = chain.blobs.get(chain.segs[0].end_cid)
    with pytest.raises(errors.ProofError, match="after the last tensor"):
        checkpoints.decode(good + b"\0")
    (hlen,) = struct.unpack("<I", good[8:12])
    header = json.loads(good[12 : 12 + hlen])
    header["optimizerState"]["0"]["exp_avg"] = {"tensor": "model/net.0.weight"}
    with pytest.raises(errors.ProofError, match="refers to"):
        checkpoints.decode(_blob(header, good[12 + hlen :]))


# --- optimizer state and exact fields ---------------------------------------------------


def _swap_end(c: Chain, index: int, mutate: Any) -> segments.Segment:
    end = c.ckpt(c.segs[index].end_cid)
    mutate(end)
    return c.forge(index, end_cid=c.blobs.put(checkpoints.encode(end)))


def test_wrong_shaped_optimizer_state_is_the_miners_fault(chain: Chain) -> None:
    def reshape(ck: checkpoints.Checkpoint) -> None:
        ck.optim[0]["exp_avg"] = torch.zeros(1, 3)

    forged = _swap_end(chain, 0, reshape)
    assert _verify(chain, forged).reason is R.NOT_BIT_EXACT
    # The next segment, chained to the forged state, is refused before it replays.
    nxt = chain.forge(1, start_cid=forged.end_cid)
    verdict = _verify(chain, nxt)
    assert verdict.reason is R.CORRUPT_BLOB and "exp_avg" in verdict.detail, verdict.line()


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda st: st.pop("exp_avg"), id="missing-moment"),
        pytest.param(lambda st: st.update(exp_avg=None), id="none-moment"),
        pytest.param(lambda st: st.update(step=torch.tensor(True)), id="bool-step"),
        pytest.param(lambda st: st.update(extra=torch.zeros(1)), id="extra-key"),
    ],
)
def test_malformed_optimizer_state_in_a_start_checkpoint_is_refused(
    chain: Chain, forge: Any
) -> None:
    """A forged end state (unaudited, so unrefused) chains into the next segment; its
    audit crashed the replay's optimizer.step() (an AUDIT_ERROR, never slashed), so
    every segment after the first could be forged with only one audit that bites."""
    forged = _swap_end(chain, 0, lambda ck: forge(ck.optim[0]))
    nxt = chain.forge(1, start_cid=forged.end_cid)
    verdict = _verify(chain, nxt)
    assert verdict.reason is R.CORRUPT_BLOB and "optim/0" in verdict.detail, verdict.line()


def test_forged_step_count_and_moments_are_refused(chain: Chain) -> None:
    def big_step(ck: checkpoints.Checkpoint) -> None:
        ck.optim[0]["step"] = torch.tensor(1e7)  # Adam's bias correction gone

    assert _verify(chain, _swap_end(chain, 0, big_step)).reason is R.NOT_BIT_EXACT

    def moments(ck: checkpoints.Checkpoint) -> None:
        for entry in ck.optim.values():
            entry["exp_avg"] = entry["exp_avg"] * 50  # steers the next segment's updates

    verdict = _verify(chain, _swap_end(chain, 0, moments))
    assert verdict.reason is R.DISTANCE_OVER_THRESHOLD and "exp_avg" in verdict.detail


def test_cosine_tolerance_does_not_let_the_weights_be_rescaled(chain: Chain) -> None:
    """1 - cos is blind to scale: end weights and moments committed at 3x the replay's
    were 'valid' at distance 0, a state no training produced, chained on by the next
    segment."""

    def rescale(ck: checkpoints.Checkpoint) -> None:
        for t in [*ck.model.values(), *(v["exp_avg"] for v in ck.optim.values())]:
            t.mul_(3)

    cosine = _spec(tolerance={"metric": "cosine"})
    assert _verify(chain, chain.segs[1], cosine).valid
    verdict = _verify(chain, _swap_end(chain, 1, rescale), cosine)
    assert verdict.reason is R.DISTANCE_OVER_THRESHOLD, verdict.line()


def test_forged_seed_is_refused(chain: Chain) -> None:
    def reseed(ck: checkpoints.Checkpoint) -> None:
        ck.seed = 99

    assert _verify(chain, _swap_end(chain, 1, reseed)).reason is R.CORRUPT_BLOB


# --- the replay cache and the world -----------------------------------------------------


def test_a_lenient_twin_task_does_not_answer_for_a_strict_one(chain: Chain) -> None:
    def perturb(ck: checkpoints.Checkpoint) -> None:
        for t in ck.model.values():
            t.add_(1e-2 * t.abs().mean())

    forged = _swap_end(chain, 1, perturb)
    lenient = _spec(tolerance={"threshold": 0.5})
    twin = chain.forge(1, end_cid=forged.end_cid, task="ns/cheap")
    assert _verify(chain, twin, lenient).valid
    assert _verify(chain, forged).reason is R.DISTANCE_OVER_THRESHOLD


def test_a_world_the_task_does_not_have_is_refused(chain: Chain) -> None:
    seg = chain.segs[0]
    big = chain.forge(
        0,
        world=segments.World(nnodes=1, nproc_per_node=2000),
        data_spec={**seg.data_spec, "worldSize": 2000},
    )
    verdict = _verify(chain, big)
    assert verdict.reason is R.WRONG_WORLD and not verdict.replayed


def test_wrong_data_stops_the_replay_after_one_step(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = verification.stepping.micro_loss

    def counting(*args: Any, **kw: Any) -> torch.Tensor:
        calls.append(kw["step"])
        return real(*args, **kw)

    monkeypatch.setattr(verification.stepping, "micro_loss", counting)
    seg = chain.segs[1]
    verdict = _verify(chain, chain.forge(1, losses=(seg.losses[0] * 2, seg.losses[1])))
    assert verdict.reason is R.WRONG_DATA_SPEC
    assert calls == [seg.start_step]


# --- fetching outside the lock ----------------------------------------------------------


class _Stalled:
    """A miner's store that hangs until released."""

    def __init__(self, inner: store.ContentStore) -> None:
        self.inner, self.release = inner, threading.Event()

    def put(self, data: bytes) -> str:
        return self.inner.put(data)

    def has(self, cid: str) -> bool:
        return self.inner.has(cid)

    def get(self, cid: str, *, max_bytes: int | None = None) -> bytes:
        self.release.wait(30)
        raise errors.StoreError("gave up")


def test_a_stalled_store_does_not_block_other_audits(chain: Chain) -> None:
    _verify(chain, chain.segs[0])  # the model is built and cached
    stalled = _Stalled(chain.blobs)
    policy = verification.Policy(task=TASK, spec=tasks.from_spec(_spec(), uid=UID))
    slow = threading.Thread(
        target=verification.verify_segment, args=(chain.segs[1], stalled, policy), daemon=True
    )
    slow.start()
    try:
        done: list[verification.Verdict] = []
        other = threading.Thread(target=lambda: done.append(_verify(chain, chain.segs[2])))
        other.start()
        other.join(20)
        assert done and done[0].valid
    finally:
        stalled.release.set()
        slow.join(30)


# --- the trainer stops on a lost commit -------------------------------------------------


@pytest.mark.usefixtures("local_env")
def test_a_failed_commit_stops_training_at_the_last_good_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = store.FilesystemStore.put
    calls = {"n": 0}

    def flaky(self: store.FilesystemStore, blob: bytes) -> str:
        calls["n"] += 1
        if calls["n"] == 3:  # the initial checkpoint, segment 0's end, then segment 1's end
            raise OSError(28, "No space left on device")
        return real(self, blob)

    monkeypatch.setattr(store.FilesystemStore, "put", flaky)
    spec = {**_spec(), "hyperparameters": {**_spec()["hyperparameters"], "steps": 8}}
    with pytest.raises(errors.TrainingError, match="No space left"):
        train_local(tmp_path / "run", spec)
    state = json.loads((tmp_path / "run" / "state" / "state.json").read_text())
    records = [segments.parse(r) for r in state["records"]]
    assert state["step"] == 2 and [s.index for s in records] == [0]
    files = sorted((tmp_path / "run" / "segs").glob("segment-*.json"))
    assert [segments.parse(f.read_bytes()).index for f in files] == [0]
