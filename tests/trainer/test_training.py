"""torchrun (gloo, 2 ranks) end to end: loss falls, honest segments verify, resume after a kill."""

from __future__ import annotations

import itertools
import json
import os
import signal
import time
from pathlib import Path

import pytest

from pot import store
from pot.trainer import segments, verification

from .conftest import Run, gpt_spec, mlp_spec, new_run, torchrun

pytestmark = pytest.mark.slow


def _segments(run: Run) -> list[segments.Segment]:
    return [segments.parse(p.read_bytes()) for p in run.segment_files()]


def _verify_all(run: Run) -> list[verification.Verdict]:
    policy = run.policy()
    blobs = store.FilesystemStore(run.store)
    out = []
    previous = None
    for seg in _segments(run):
        policy.previous = previous
        verdict = verification.verify_segment(seg, blobs, policy)
        assert verdict.valid, (seg.index, verdict.line())
        out.append(verdict)
        previous = seg
    return out


def _check_chain(run: Run, n: int) -> list[segments.Segment]:
    segs = _segments(run)
    assert [s.index for s in segs] == list(range(n))
    for a, b in itertools.pairwise(segs):
        assert a.end_cid == b.start_cid and a.end_step == b.start_step
    assert segs[-1].final and not any(s.final for s in segs[:-1])
    assert {s.miner for s in segs} == {run.key.address}
    for s in segs:
        segments.check_signature(s, run.key.address)
    return segs


def test_mlp_two_ranks_loss_falls_and_every_segment_verifies(mlp_run: Run) -> None:
    segs = _check_chain(mlp_run, 6)
    losses = [x for s in segs for x in s.losses]
    assert sum(losses[-20:]) / 20 < 0.5 * sum(losses[:20]) / 20
    assert segs[0].world == segments.World(nnodes=1, nproc_per_node=2)
    assert segs[0].data_spec["worldSize"] == 2
    assert "evalLoss" in segs[-1].metrics
    verdicts = _verify_all(mlp_run)
    # Honest replays at world size 2 land on the committed weights (calibration).
    assert all(v.distance is not None and v.distance <= 1e-6 for v in verdicts)
    # The spec is kept beside the store for offline audits.
    assert (mlp_run.store / "specs" / f"{segs[0].hyperparams_hash}.json").exists()


def test_tiny_gpt_two_ranks_deterministic_replays_bit_exactly(tmp_path: Path) -> None:
    run = new_run(tmp_path, gpt_spec(deterministic=True))
    torchrun(run)
    segs = _check_chain(run, 3)
    assert segs[-1].losses[-1] < 0.8 * segs[0].losses[0]
    # In deterministic mode a valid verdict means the replayed end checkpoint
    # has exactly the committed CID (else NOT_BIT_EXACT).
    verdicts = _verify_all(run)
    assert all(v.distance == 0.0 for v in verdicts)


def _worker_pid(agent: int, rank: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != agent:
                continue
            env = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if f"RANK={rank}".encode() in env:
            return int(entry.name)
    return None


def test_kill_rank0_mid_run_then_resume(tmp_path: Path, mlp_run: Run) -> None:
    run = new_run(tmp_path, mlp_spec())
    proc = torchrun(run, wait=False)
    deadline = time.monotonic() + 120
    while not run.segment_files() and time.monotonic() < deadline:
        time.sleep(0.02)
    pid = _worker_pid(proc.pid, 0)
    assert pid is not None and run.segment_files(), "training never committed a segment"
    os.kill(pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, out[-2000:]
    committed = len(run.segment_files())
    assert committed < 6, "the kill came after the last segment"
    torchrun(run)
    segs = _check_chain(run, 6)
    _verify_all(run)
    reference = _segments(mlp_run)[-1]
    assert segs[-1].losses[-1] == pytest.approx(reference.losses[-1], rel=1e-4)
    assert segs[-1].metrics["evalLoss"] == pytest.approx(reference.metrics["evalLoss"], rel=1e-4)
    assert json.loads((run.state / "state.json").read_text())["step"] == 300
