"""A replica that restarted, or caught up by state transfer, computes what the others compute.

``App.restore`` rebuilds the state from canonical (sorted-key) JSON, so its dicts iterate in
another order than the requests inserted them (``a/11`` before ``a/3``). Every replica signs
the allocation and the contract wants 2f+1 signatures over the same bytes: nothing that feeds
the replicated state may depend on that order. Pure: the app alone, fed committed requests.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pot import keys, signing
from pot.trainer import segments
from pot.validator import app as vapp
from pot.validator import messages as m
from pot.validator import pbft
from tests.validator.test_chaining import TASK, Replica, seg
from tests.validator.test_verdicts import vote

TARGET = {"name": "evalLoss", "threshold": 0.5}


class Recording(Replica):
    """A replica that keeps every op it executed, to replay them elsewhere."""

    def __init__(self, **kw: Any) -> None:
        self.ops: list[bytes] = []
        super().__init__(**kw)

    def execute(self, op: bytes) -> dict[str, Any]:
        self.ops.append(op)
        return super().execute(op)


def respelled(s: segments.Segment, key: keys.Key, miner: str) -> segments.Segment:
    """``s`` signed by ``key`` under another capitalisation of its address."""
    unsigned = dataclasses.replace(s, miner=miner, signature="")
    msg = segments._message(unsigned)
    sig = signing.sign(key, segments.DOMAIN, segments.TYPES, segments.PRIMARY, msg)
    return dataclasses.replace(unsigned, signature=sig)


def made(
    key: keys.Key,
    index: int,
    *,
    rank: int = 0,
    final: bool = False,
    loss: float = 0.0,
    lower: bool = False,
) -> segments.Segment:
    s = seg(key, index, f"{key.address}{index}", f"{key.address}{index + 1}", rank=rank, last=-1)
    s = dataclasses.replace(s, final=final, metrics={"evalLoss": loss} if final else {})
    return respelled(s, key, key.address.lower() if lower else key.address)


def scenario() -> Recording:
    """Two ranks of 12 segments, crossing index 10 (``a/11`` sorts before ``a/3``); some of
    rank 0's segments signed under the lower-case address; rank 1's lower-case segment 1 is
    challenged and rejected (slashed); the target is read from the lowest rank's final."""
    r = Recording(nodes=2, target=TARGET, segments=12)
    a, b = keys.generate(), keys.generate()
    a_segs = [made(a, i, final=i == 11, loss=0.1, lower=i in (5, 10)) for i in range(12)]
    b_segs = [made(b, i, rank=1, final=i == 11, loss=0.9, lower=i == 1) for i in range(12)]
    for s in (*b_segs, *a_segs):  # rank 1's final committed first
        assert r.submit(s)["ok"], s.index
    for s in (a_segs[0], a_segs[11], b_segs[0], b_segs[11]):
        r.verdicts(s, True)
    for i in range(3):
        vote(r, b_segs[1], i, False, "LOSS_MISMATCH")
    r.audited()
    alloc = r.task["allocation"]
    assert alloc is not None and alloc["targetMet"] is True  # rank 0's final: 0.1, not 0.9
    assert alloc["slashed"] == [b.address]
    return r


def test_restored_replica_matches_one_that_never_restarted() -> None:
    fresh = scenario()
    reference = vapp.App(fresh.app.v)
    ref_results = [_run(reference, i, op) for i, op in enumerate(fresh.ops)]
    assert reference.snapshot() == fresh.app.snapshot()
    for cut in range(1, len(fresh.ops), 3):
        app = vapp.App(fresh.app.v)
        got = [_run(app, i, op) for i, op in enumerate(fresh.ops[:cut])]
        restored = vapp.App(fresh.app.v)
        restored.restore(app.snapshot())
        got += [_run(restored, cut + i, op) for i, op in enumerate(fresh.ops[cut:])]
        assert got == ref_results, cut
        assert restored.snapshot() == reference.snapshot(), cut
        assert restored.allocation(TASK) == reference.allocation(TASK)


def _run(app: vapp.App, seq: int, op: bytes) -> bytes:
    ctx = pbft.ExecContext(seq=seq + 1, view=0, batch_digest=bytes(32))
    return app.execute(m.Request(client="test", ts=seq + 1, op=op), ctx)
