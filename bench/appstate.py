"""``pot bench appstate``: snapshot size and time of the validators' state, closed tasks vs kept.

Every checkpoint (each K sequence numbers) encodes the whole replicated state, and a
replica that fell behind fetches it whole. The baseline keeps every finished task's
segment records (what the state did before tasks were closed); the other column closes
each task at its allocation (``pot.validator.closing``). Both states are built from the
same real committed requests (signed segments, verdicts, ``audited`` claims) of one task,
repeated under new names; the ratio is closed / kept, measured in this run.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from typing import Any

from common import report  # type: ignore[import-not-found]

from pot import cids, keys, signing
from pot.trainer import segments
from pot.validator import app as vapp
from pot.validator import closing, pbft, verdicts
from pot.validator import messages as m

TASK = "bench/task"
K = 20
REPLICAS = [keys.generate() for _ in range(4)]


def _execute(app: vapp.App, seq: int, op: bytes) -> dict[str, Any]:
    ctx = pbft.ExecContext(seq=seq, view=0, batch_digest=bytes(32))
    result: dict[str, Any] = json.loads(app.execute(m.Request(client="bench", ts=seq, op=op), ctx))
    return result


def _ops(n: int) -> list[bytes]:
    """The committed requests of one task of two ranks and ``n`` segments each: registration,
    signed segments, 2f+1 verdicts on the public ones, 2f+1 ``audited``."""
    spec = {
        "model": {"name": "mlp-regression"},
        "dataset": {"name": "synthetic-regression"},
        "hyperparameters": {"steps": n * K},
        "resources": {"nodes": 2},
        "proof": {"segmentSteps": K, "sampleRate": 1e-12},
        "reward": {"pool": "1000", "minerStake": "10"},
    }
    ops = [vapp.op("register", task=TASK, spec=spec, uid="uid-bench")]
    public = []
    for rank in range(2):
        key = keys.generate()
        for i in range(n):
            seg = segments.sign(
                segments.Segment(
                    task=TASK,
                    index=i,
                    node_rank=rank,
                    miner=key.address,
                    start_step=K * i,
                    steps=K,
                    start_cid=cids.cid_of(b"%d/%d" % (rank, i) if i else b"init"),
                    end_cid=cids.cid_of(b"%d/%d" % (rank, i + 1)),
                    data_spec={"seed": 0},
                    hyperparams_hash="0x" + "00" * 32,
                    losses=(0.5,) * K,
                    world=segments.World(nnodes=2, nproc_per_node=1),
                    final=i == n - 1,
                    metrics={"evalLoss": 0.1} if i == n - 1 else {},
                ),
                key,
            )
            ops.append(vapp.op("segment", segment=seg.record()))
            if i in (0, n - 1):
                public.append(seg)
    for seg in public:
        digest = segments.digest(seg)
        msg = verdicts.verdict_message(
            task=TASK, miner=seg.miner, index=seg.index, digest=digest, valid=True, reason=""
        )
        for r, key in enumerate(REPLICAS[:3]):
            sig = signing.sign(key, verdicts.VERDICT_DOMAIN, verdicts.VERDICT_TYPES, "Verdict", msg)
            body = {"miner": seg.miner, "index": seg.index, "segment": digest, "valid": True}
            ops.append(vapp.op("verdict", task=TASK, **body, reason="", replica=r, signature=sig))
    for r, key in enumerate(REPLICAS[:3]):
        sig = signing.sign(
            key, verdicts.VERDICT_DOMAIN, verdicts.AUDITED_TYPES, "Audited", {"task": TASK}
        )
        ops.append(vapp.op("audited", task=TASK, replica=r, signature=sig))
    return ops


def _finished_task(v: vapp.Validators, n: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """One allocated task: (its state with segment records kept, its state closed)."""
    app = vapp.App(v)
    real_close = closing.close
    closing.close = lambda t: None  # the baseline: records stay
    try:
        for seq, op in enumerate(_ops(n), start=1):
            result = _execute(app, seq, op)
            assert result.get("ok"), result
    finally:
        closing.close = real_close
    kept = app.tasks[TASK]
    assert kept["allocation"] is not None, "the bench task did not allocate"
    closed = copy.deepcopy(kept)
    closing.close(closed)
    return kept, closed


def _measure(state: dict[str, Any], v: vapp.Validators, repeats: int) -> tuple[int, float, float]:
    """Snapshot bytes and the median encode and decode seconds over ``repeats`` runs each."""
    app = vapp.App(v)
    app.tasks = state
    encode, decode = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        data = app.snapshot()
        encode.append(time.perf_counter() - t0)
    for _ in range(repeats):
        t0 = time.perf_counter()
        vapp.App(v).restore(data)
        decode.append(time.perf_counter() - t0)
    return len(data), statistics.median(encode), statistics.median(decode)


def main(quick: bool = False) -> dict[str, Any]:
    """Run the bench; quick: fewer and shorter tasks."""
    segments = 20 if quick else 100
    v = vapp.Validators(
        addresses=tuple(k.address for k in REPLICAS),
        stakes=(1, 1, 1, 1),
        chain_id=31337,
        contract="0x" + "11" * 20,
        f=1,
    )
    kept, closed = _finished_task(v, segments)
    rows = []
    for tasks in (10, 100) if quick else (10, 100, 500):
        repeats = 5 if tasks >= 100 else 11
        k = _measure({f"ns/t{i}": kept for i in range(tasks)}, v, repeats)
        c = _measure({f"ns/t{i}": closed for i in range(tasks)}, v, repeats)
        rows.append(
            [
                tasks,
                2 * segments,
                k[0],
                c[0],
                c[0] / k[0],
                k[1] * 1e3,
                c[1] * 1e3,
                c[1] / k[1],
                c[2] / k[2],
            ]
        )
    return report(
        "appstate",
        [
            "closed tasks",
            "segments each",
            "kept bytes",
            "closed bytes",
            "bytes ratio",
            "kept encode ms",
            "closed encode ms",
            "encode ratio",
            "decode ratio",
        ],
        rows,
    )
