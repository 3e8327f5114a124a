"""pot bench trainer: what proof generation costs the miner and what audits cost validators.

Ratios against baselines measured in the same run (never absolute numbers):

- throughput with proof segments (k = 100) / plain DDP, same model, data and
  process group (goal >= 0.98 on tiny-gpt): the proof's overhead is one loss
  all-gather and one state snapshot per segment, the rest runs on a thread;
- audit cost: replaying one segment / training it, times the audit rate, beside
  the probability that a miner forging a fraction rho of its segments goes
  uncaught and the slash that makes that negative expected value
  (docs/proof.md, "Audit probability").
"""

from __future__ import annotations

import math
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import torch

from pot import keys, store
from pot.trainer import segments, tasks, training, verification

TASK = "bench/trainer"


def _spec(steps: int, k: int, gpu: bool) -> dict[str, Any]:
    return {
        "model": {
            "name": "tiny-gpt",
            "config": {"dModel": 64, "layers": 2, "heads": 4, "context": 64},
        },
        "dataset": {"name": "tiny-shakespeare"},
        "hyperparameters": {"lr": 0.003, "batchSize": 16, "steps": steps, "seed": 1},
        "resources": {"nodes": 1, "gpusPerNode": 1 if gpu else 0},
        "proof": {"segmentSteps": k},
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _train(root: Path, raw: dict[str, Any], *, proof: bool) -> tuple[float, dict[str, Any]]:
    """Steps per second between the first and the last step (world size 1)."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(_free_port()),
        RANK="0",
        WORLD_SIZE="1",
        LOCAL_RANK="0",
        LOCAL_WORLD_SIZE="1",
    )
    stamps: dict[int, float] = {}
    steps = raw["hyperparameters"]["steps"]

    def on_step(step: int) -> None:
        if step in (1, steps):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            stamps[step] = time.perf_counter()

    opts = training.Options(
        task=TASK,
        spec=tasks.from_spec(raw),
        store_dir=root / "store",
        state_dir=root / "state",
        key=keys.generate(),
        segments_dir=root / "segs" if proof else None,
        proof=proof,
        on_step=on_step,
    )
    result = training.main(opts)
    return (steps - 1) / (stamps[steps] - stamps[1]), result


def main(quick: bool = False) -> dict[str, Any]:
    gpu = torch.cuda.is_available()
    steps, k, reps = (200, 100, 2) if quick else (300, 100, 5)
    raw = _spec(steps, k, gpu)
    plain, proof, overhead = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        # Interleaved repetitions; the best of each side is the estimate least
        # disturbed by other load on the machine.
        for rep in range(reps):
            plain.append(_train(Path(tmp) / f"plain{rep}", raw, proof=False)[0])
            rate, result = _train(Path(tmp) / f"proof{rep}", raw, proof=True)
            proof.append(rate)
            overhead.append(result["proofSeconds"] / result["seconds"])
        root = Path(tmp) / f"proof{reps - 1}"
        ratio = max(proof) / max(plain)
        # Audit: replay one segment (uncached) against its training time.
        seg_file = sorted((root / "segs").glob("segment-*.json"))[1]
        spec = tasks.from_spec(raw)
        policy = verification.Policy(task=TASK, spec=spec, device="cuda" if gpu else "cpu")
        began = time.perf_counter()
        verdict = verification.verify_segment(
            segments.parse(seg_file.read_bytes()), store.FilesystemStore(root / "store"), policy
        )
        replay_s = time.perf_counter() - began
    train_s = k / max(proof)
    replay_ratio = replay_s / train_s
    rate = spec.audit_rate
    rows: list[list[Any]] = [
        ["throughput proof / plain DDP (tiny-gpt, k=100)", ratio],
        ["plain DDP steps/s (best of reps)", max(plain)],
        ["proof main-thread time / training time (median)", sorted(overhead)[reps // 2]],
        ["replay seconds / training seconds (one segment)", replay_ratio],
        [f"audit compute / training compute at sampleRate {rate}", rate * replay_ratio],
        ["honest replay verdict", verdict.line()],
    ]
    n = 1000  # segments per miner in a long task
    for rho in (0.001, 0.01, 0.1, 0.5, 1.0):
        forged = max(1, math.ceil(rho * n))
        rows.append([f"P(uncaught), rho={rho}, n={n}, p={rate}", (1 - rate) ** forged])
    # Break-even slash in units of one segment's compute c (reward r = c, the
    # worst case): forging m segments gains m*c and loses (S + m*r) with
    # probability 1-(1-p)^m; the maximum over m of the S that zeroes it is at m=1.
    rows.append([f"break-even slash / segment compute at p={rate}", 1 / rate - 1])
    return common.report(
        "trainer",
        ["measure", "value"],
        rows,
        device="cuda" if gpu else "cpu",
        steps=steps,
        segment_steps=k,
        repetitions=reps,
        plain_steps_per_s=plain,
        proof_overhead_fraction=overhead,
        proof_steps_per_s=proof,
    )


if __name__ == "__main__":
    main(quick=True)
