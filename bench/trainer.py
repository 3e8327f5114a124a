"""pot bench trainer: what proof generation costs the miner and what audits cost validators.

Ratios against baselines measured in the same run (never absolute numbers):

- throughput with proof segments (k = 100) / plain DDP, same model, data and
  process group (goal >= 0.98 on tiny-gpt): the proof's overhead is one loss
  all-gather and one state snapshot per segment, the rest runs on a thread.
  Each repetition trains 2k steps and times the second segment, from the step
  that commits the first segment to the end of the second: one whole segment
  in steady state, with its commit (the first segment is the warm-up). Plain
  and proof runs alternate in pairs, in ABBA order so a load that drifts over
  a pair weighs on both sides alike; the estimate is the median of the paired
  ratios, with their spread, since the machine may be shared;
- audit cost: replaying one segment / training it, times the audit rate, beside
  the probability that a miner forging a fraction rho of its segments goes
  uncaught and the slash that makes that negative expected value
  (docs/proof.md, "Audit probability").
"""

from __future__ import annotations

import math
import os
import socket
import statistics
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
    """Steps per second over the second segment (world size 1): from the end of step k
    (the first commit starts there) to the end of step 2k."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(_free_port()),
        RANK="0",
        WORLD_SIZE="1",
        LOCAL_RANK="0",
        LOCAL_WORLD_SIZE="1",
    )
    stamps: dict[int, float] = {}
    k = raw["proof"]["segmentSteps"]

    def on_step(step: int) -> None:
        if step in (k, 2 * k):
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
    return k / (stamps[2 * k] - stamps[k]), result


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def main(quick: bool = False) -> dict[str, Any]:
    gpu = torch.cuda.is_available()
    k = 100
    pairs = 2 if quick else 5
    raw = _spec(2 * k, k, gpu)
    plain: list[float] = []
    proof: list[float] = []
    overhead: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(pairs):
            order = (False, True) if rep % 2 == 0 else (True, False)  # ABBA...
            for with_proof in order:
                name = f"{'proof' if with_proof else 'plain'}{rep}"
                rate, result = _train(Path(tmp) / name, raw, proof=with_proof)
                if with_proof:
                    proof.append(rate)
                    overhead.append(result["proofSeconds"] / result["seconds"])
                else:
                    plain.append(rate)
            print(
                f"pair {rep + 1}/{pairs}: plain {plain[-1]:.3g} steps/s, proof {proof[-1]:.3g} steps/s"
            )
        root = Path(tmp) / f"proof{pairs - 1}"
        ratios = [b / a for a, b in zip(plain, proof, strict=True)]
        ratio = _median(ratios)
        # Audit: replay one segment (uncached) against its training time.
        seg_file = sorted((root / "segs").glob("segment-*.json"))[1]
        spec = tasks.from_spec(raw)
        policy = verification.Policy(task=TASK, spec=spec, device="cuda" if gpu else "cpu")
        verification.clear_caches()
        began = time.perf_counter()
        verdict = verification.verify_segment(
            segments.parse(seg_file.read_bytes()), store.FilesystemStore(root / "store"), policy
        )
        replay_s = time.perf_counter() - began
    train_s = k / _median(proof)
    replay_ratio = replay_s / train_s
    rate = spec.audit_rate
    rows: list[list[Any]] = [
        [f"throughput proof / plain DDP (tiny-gpt, k={k}), median of {pairs} pairs", ratio],
        ["  paired ratios min .. max", f"{min(ratios):.4f} .. {max(ratios):.4f}"],
        ["  plain DDP steps/s, median (min .. max)", _spread(plain)],
        ["  proof steps/s, median (min .. max)", _spread(proof)],
        ["proof main-thread time / training time (median)", _median(overhead)],
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
        steps=2 * k,
        segment_steps=k,
        pairs=pairs,
        order="ABBA (plain first in even pairs)",
        paired_ratios=ratios,
        plain_steps_per_s=plain,
        proof_overhead_fraction=overhead,
        proof_steps_per_s=proof,
    )


def _spread(xs: list[float]) -> str:
    return f"{_median(xs):.4g} ({min(xs):.4g} .. {max(xs):.4g})"


if __name__ == "__main__":
    main(quick=True)
