"""pot bench trainer: what proof generation costs the miner and what audits cost validators.

Ratios against baselines measured in the same run (never absolute numbers):

- throughput with proof segments (k = 100) / plain DDP, same model, data and
  process group (goal >= 0.98 on tiny-gpt): the proof's overhead is one loss
  all-gather and one state snapshot per segment, the rest runs on a thread.
  Each repetition trains m·k steps and times segments 2..m, from the step
  that commits the first segment to the end of the last: whole segments in
  steady state, each with its commit (the first segment is the warm-up).
  Plain and proof runs alternate in pairs, in ABBA order so a load that
  drifts over a pair weighs on both sides alike; the estimate is the median
  of the paired ratios, with their spread, since the machine may be shared.
  Beside the wall-clock ratio, the ratio of process CPU time per step (all
  threads, the commit thread included) is robust to other load and bounds
  the overhead from above: it counts the commit thread's work even where it
  runs on an otherwise idle core. On CPU the bench trains with one intra-op
  thread, as torchrun's workers do (it sets OMP_NUM_THREADS=1): with a thread
  pool on a loaded two-core machine, spinning workers made both numbers swing
  five-fold from run to run;
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
UID = "uid-bench"  # the TrainingTask uid the run seed derives from


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


def _train(root: Path, raw: dict[str, Any], *, proof: bool) -> tuple[float, float, dict[str, Any]]:
    """Steps per wall-clock second and per process CPU second over segments 2..m (world
    size 1): from the end of step k (the first commit starts there) to the last step."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(_free_port()),
        RANK="0",
        WORLD_SIZE="1",
        LOCAL_RANK="0",
        LOCAL_WORLD_SIZE="1",
    )
    stamps: dict[int, tuple[float, float]] = {}
    k = raw["proof"]["segmentSteps"]
    last = raw["hyperparameters"]["steps"]

    def on_step(step: int) -> None:
        if step in (k, last):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            stamps[step] = (time.perf_counter(), time.process_time())

    opts = training.Options(
        task=TASK,
        spec=tasks.from_spec(raw, uid=UID),
        store_dir=root / "store",
        state_dir=root / "state",
        key=keys.generate(),
        segments_dir=root / "segs" if proof else None,
        proof=proof,
        on_step=on_step,
    )
    result = training.main(opts)
    (wall0, cpu0), (wall1, cpu1) = stamps[k], stamps[last]
    return (last - k) / (wall1 - wall0), (last - k) / (cpu1 - cpu0), result


VALIDATORS = 4  # every replica of the smallest ValidatorSet (3f+1, f=1) audits
SEGMENTS = 1000  # segments per miner in a long task


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def main(quick: bool = False) -> dict[str, Any]:
    gpu = torch.cuda.is_available()
    threads = torch.get_num_threads()
    if not gpu:
        torch.set_num_threads(1)
    try:
        return _measure(gpu=gpu, quick=quick)
    finally:
        torch.set_num_threads(threads)


def _measure(*, gpu: bool, quick: bool) -> dict[str, Any]:
    k = 100
    pairs, m = (2, 3) if quick else (7, 5)
    raw = _spec(m * k, k, gpu)
    plain: list[float] = []
    proof: list[float] = []
    plain_cpu: list[float] = []
    proof_cpu: list[float] = []
    overhead: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(pairs):
            order = (False, True) if rep % 2 == 0 else (True, False)  # ABBA...
            for with_proof in order:
                name = f"{'proof' if with_proof else 'plain'}{rep}"
                rate, cpu_rate, result = _train(Path(tmp) / name, raw, proof=with_proof)
                if with_proof:
                    proof.append(rate)
                    proof_cpu.append(cpu_rate)
                    overhead.append(result["proofSeconds"] / result["seconds"])
                else:
                    plain.append(rate)
                    plain_cpu.append(cpu_rate)
            print(
                f"pair {rep + 1}/{pairs}: steps/s plain {plain[-1]:.3g}, proof {proof[-1]:.3g}; "
                f"per CPU s plain {plain_cpu[-1]:.3g}, proof {proof_cpu[-1]:.3g}"
            )
        root = Path(tmp) / f"proof{pairs - 1}"
        ratios = [b / a for a, b in zip(plain, proof, strict=True)]
        ratio = _median(ratios)
        cpu_ratios = [b / a for a, b in zip(plain_cpu, proof_cpu, strict=True)]
        # Audit: replay one segment (uncached) against its training time.
        seg_file = sorted((root / "segs").glob("segment-*.json"))[1]
        spec = tasks.from_spec(raw, uid=UID)
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
        [
            f"CPU-time throughput proof / plain, median of {pairs} pairs (min .. max)",
            _spread(cpu_ratios),
        ],
        ["  plain DDP steps/s, median (min .. max)", _spread(plain)],
        ["  proof steps/s, median (min .. max)", _spread(proof)],
        ["proof main-thread time / training time (median)", _median(overhead)],
        ["replay seconds / training seconds (one segment)", replay_ratio],
        [
            f"audit compute / training compute, per auditor, at sampleRate {rate}",
            rate * replay_ratio,
        ],
        [
            f"  all {VALIDATORS} validators, {SEGMENTS}-segment task, + first/final segments",
            VALIDATORS * (rate + 2 / SEGMENTS) * replay_ratio,
        ],
        ["honest replay verdict", verdict.line()],
    ]
    n = SEGMENTS
    # Each of the 2f+1 correct validators replays a segment by its own private coin.
    correct = VALIDATORS - (VALIDATORS - 1) // 3
    p_eff = 1 - (1 - rate) ** correct
    for rho in (0.001, 0.01, 0.1, 0.5, 1.0):
        forged = max(1, math.ceil(rho * n))
        rows.append([f"P(uncaught), rho={rho}, n={n}, p_eff={p_eff:.4f}", (1 - p_eff) ** forged])
    # Break-even slash in units of one segment's compute c (reward r = c, the
    # worst case): forging m segments gains m*c and loses (S + m*r) with
    # probability 1-(1-p_eff)^m; the maximum over m of the S that zeroes it is at m=1.
    rows.append([f"break-even slash / segment compute at p_eff={p_eff:.4f}", 1 / p_eff - 1])
    return common.report(
        "trainer",
        ["measure", "value"],
        rows,
        device="cuda" if gpu else "cpu",
        intra_op_threads=torch.get_num_threads(),
        steps=m * k,
        timed_steps=(m - 1) * k,
        segment_steps=k,
        pairs=pairs,
        order="ABBA (plain first in even pairs)",
        paired_ratios=ratios,
        paired_cpu_ratios=cpu_ratios,
        plain_steps_per_cpu_s=plain_cpu,
        proof_steps_per_cpu_s=proof_cpu,
        plain_steps_per_s=plain,
        proof_overhead_fraction=overhead,
        proof_steps_per_s=proof,
    )


def _spread(xs: list[float]) -> str:
    return f"{_median(xs):.4g} ({min(xs):.4g} .. {max(xs):.4g})"


if __name__ == "__main__":
    main(quick=True)
