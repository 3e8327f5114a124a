"""The replicated app's chain check: segment i starts where the same miner's i-1 ended.

Pure: the state machine alone, fed committed requests in order, as PBFT would.
The CIDs are stand-ins (hashes of labels); what matters is which equal which.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from pot import cids, keys, signing
from pot.trainer import segments
from pot.validator import app as vapp
from pot.validator import messages as m
from pot.validator import pbft, verdicts

TASK = "default/chain"
K = 20
REPLICAS = [keys.generate() for _ in range(4)]


def cid(label: str) -> str:
    return cids.cid_of(label.encode())


def _spec(nodes: int = 1, rate: float = 1e-12, segments: int = 3) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"name": "mlp-regression"},
        "dataset": {"name": "synthetic-regression"},
        "hyperparameters": {"steps": segments * K},
        "resources": {"nodes": nodes},
        "proof": {"segmentSteps": K, "sampleRate": rate},
        "reward": {"pool": "1000", "minerStake": "10"},
    }
    return spec


class Replica:
    """One replica's app and a counter standing in for the committed order."""

    def __init__(
        self,
        nodes: int = 1,
        target: dict[str, Any] | None = None,
        rate: float = 1e-12,
        segments: int = 3,
        token: str | None = None,
    ) -> None:
        """A task of ``segments`` segments of K steps per rank (the last one is final)."""
        self.app = vapp.App(
            vapp.Validators(
                addresses=tuple(k.address for k in REPLICAS),
                stakes=(1, 1, 1, 1),
                chain_id=31337,
                contract="0x" + "11" * 20,
                f=1,
            )
        )
        self.seq = 0
        spec = _spec(nodes, rate, segments)
        if target is not None:
            spec["reward"]["targetMetric"] = target
        if token is not None:
            spec["reward"]["token"] = token
        assert self.execute(vapp.op("register", task=TASK, spec=spec, uid="uid-chain"))["ok"]

    def execute(self, op: bytes) -> dict[str, Any]:
        self.seq += 1
        ctx = pbft.ExecContext(seq=self.seq, view=0, batch_digest=bytes(32))
        result: dict[str, Any] = json.loads(
            self.app.execute(m.Request(client="test", ts=self.seq, op=op), ctx)
        )
        return result

    def submit(self, seg: segments.Segment) -> dict[str, Any]:
        return self.execute(vapp.op("segment", segment=seg.record()))

    def verdicts(self, seg: segments.Segment, valid: bool) -> dict[str, Any]:
        """2f+1 replicas vote ``valid`` on ``seg``."""
        digest = segments.digest(seg)
        result: dict[str, Any] = {}
        for i, key in enumerate(REPLICAS[:3]):
            msg = verdicts.verdict_message(
                task=TASK, miner=seg.miner, index=seg.index, digest=digest, valid=valid, reason=""
            )
            sig = signing.sign(key, verdicts.VERDICT_DOMAIN, verdicts.VERDICT_TYPES, "Verdict", msg)
            result = self.execute(
                vapp.op(
                    "verdict",
                    task=TASK,
                    miner=seg.miner,
                    index=seg.index,
                    segment=digest,
                    valid=valid,
                    reason="",
                    replica=i,
                    signature=sig,
                )
            )
        return result

    def audited(self) -> None:
        """2f+1 replicas say they finished their private audits of the task."""
        for i, key in enumerate(REPLICAS[:3]):
            sig = signing.sign(
                key, verdicts.VERDICT_DOMAIN, verdicts.AUDITED_TYPES, "Audited", {"task": TASK}
            )
            assert self.execute(vapp.op("audited", task=TASK, replica=i, signature=sig))["ok"]

    @property
    def task(self) -> dict[str, Any]:
        return self.app.tasks[TASK]


def seg(
    key: keys.Key, index: int, start: str, end: str, rank: int = 0, last: int = 2
) -> segments.Segment:
    """Segment ``index`` of a task whose segment ``last`` is its final one."""
    return segments.sign(
        segments.Segment(
            task=TASK,
            index=index,
            node_rank=rank,
            miner=key.address,
            start_step=K * index,
            steps=K,
            start_cid=cid(start),
            end_cid=cid(end),
            data_spec={"seed": 0},
            hyperparams_hash="0x" + "00" * 32,
            losses=(0.5,) * K,
            world=segments.World(nnodes=2, nproc_per_node=1),
            final=index == last,
            metrics={"evalLoss": 0.1} if index == last else {},
        ),
        key,
    )


def _reasons(r: Replica) -> list[tuple[int, str]]:
    return [(x["index"], x["reason"]) for x in r.task["rejections"]]


def test_honest_chain_is_accepted() -> None:
    r, miner = Replica(), keys.generate()
    for i in range(3):
        assert r.submit(seg(miner, i, f"c{i}", f"c{i + 1}"))["ok"]
    assert r.task["rejections"] == []
    assert len(r.task["segments"]) == 3


def test_forged_start_is_refused_with_broken_chain() -> None:
    r, miner = Replica(), keys.generate()
    assert r.submit(seg(miner, 0, "c0", "c1"))["ok"]
    forged = seg(miner, 1, "elsewhere", "c2")
    result = r.submit(forged)
    assert result["reason"] == "BROKEN_CHAIN" and not result["ok"]
    assert "segment 0's endCid" in result["detail"]
    # Not stored, listed once however often it is sent, and the miner can still chain on.
    assert r.submit(forged)["reason"] == "BROKEN_CHAIN"
    assert _reasons(r) == [(1, "BROKEN_CHAIN")]
    assert len(r.task["segments"]) == 1
    assert r.submit(seg(miner, 1, "c1", "c2"))["ok"]
    assert r.app.view(TASK)["progress"]["segmentsCommitted"] == 2  # type: ignore[index]


def test_out_of_order_is_checked_when_both_are_in() -> None:
    r, miner = Replica(), keys.generate()
    # Segment 2 first: nothing to check it against yet.
    assert r.submit(seg(miner, 2, "c2", "c3"))["ok"]
    # Segment 1 arrives later and does not end where 2 starts: the later arrival is refused.
    result = r.submit(seg(miner, 1, "c1", "other"))
    assert result["reason"] == "BROKEN_CHAIN"
    assert "segment 2's startCid" in result["detail"]
    # The matching one fills the gap; segment 0 then checks against it.
    assert r.submit(seg(miner, 1, "c1", "c2"))["ok"]
    assert r.submit(seg(miner, 0, "c0", "not-c1"))["reason"] == "BROKEN_CHAIN"
    assert r.submit(seg(miner, 0, "c0", "c1"))["ok"]
    assert _reasons(r) == [(1, "BROKEN_CHAIN"), (0, "BROKEN_CHAIN")]


def test_chains_are_per_miner() -> None:
    r = Replica(nodes=2)
    a, b = keys.generate(), keys.generate()
    assert r.submit(seg(a, 0, "c0", "a1"))["ok"]
    # Another node's segment 1 is not checked against a's segment 0.
    assert r.submit(seg(b, 1, "b1", "b2", rank=1))["ok"]
    assert r.task["rejections"] == []


def test_segment_zero_is_always_audited_and_anchors_the_task() -> None:
    r = Replica(nodes=2)
    a, b = keys.generate(), keys.generate()
    first = seg(a, 0, "init", "a1")
    assert r.submit(first)["sampled"] is True  # despite a sample rate of 1e-12
    assert r.submit(seg(a, 1, "a1", "a2"))["sampled"] is False
    # Before any verdict there is no recorded initial checkpoint: b's start is not judged
    # here (its own audit replays it from the seed's checkpoint).
    early = seg(b, 0, "pretrained", "b1", rank=1)
    assert r.submit(early)["ok"]
    assert r.task["initialCid"] is None
    # 2f+1 auditors rebuilt the seed's checkpoint and found a's start to be it.
    assert r.verdicts(first, valid=True)["decided"] is True
    assert r.task["initialCid"] == cid("init")
    c = keys.generate()
    r2 = Replica(nodes=2)
    r2.task["initialCid"] = cid("init")
    result = r2.submit(seg(c, 0, "pretrained", "c1", rank=1))
    assert result["reason"] == "BROKEN_CHAIN"
    assert "initial checkpoint" in result["detail"]
    assert r2.submit(seg(c, 0, "init", "c1", rank=1))["ok"]


def test_a_failed_audit_of_segment_zero_records_no_initial_checkpoint() -> None:
    r, miner = Replica(), keys.generate()
    first = seg(miner, 0, "pretrained", "c1")
    assert r.submit(first)["ok"]
    assert r.verdicts(first, valid=False)["decided"] is False
    assert r.task["initialCid"] is None


@pytest.mark.parametrize(
    ("order", "kept"),
    [
        # The forged segment 1 arrives after its neighbours: refused, the honest one fits.
        ((0, 2, 1), {0: "c0", 1: "c1", 2: "c2"}),
        # It arrives first: it stays, and the honest segment 0 that contradicts it is the
        # later arrival (the miner signed both; chains are per miner, no one else pays).
        ((1, 2, 0), {1: "x", 2: "c2"}),
    ],
)
def test_replicas_agree_whatever_the_order(order: tuple[int, ...], kept: dict[int, str]) -> None:
    """Determinism: the same committed sequence gives the same state on every replica."""
    miner = keys.generate()
    chain = [seg(miner, i, f"c{i}", f"c{i + 1}") for i in range(3)]
    forged = seg(miner, 1, "x", "c2")
    replicas = [Replica(), Replica()]
    for r in replicas:
        for i in order:
            r.submit(forged if i == 1 else chain[i])
        r.submit(chain[1])
    assert replicas[0].app.snapshot() == replicas[1].app.snapshot()
    starts = {s["index"]: s["startCid"] for s in replicas[0].task["segments"].values()}
    assert starts == {i: cid(c) for i, c in kept.items()}
    assert ("BROKEN_CHAIN" in {x for _, x in _reasons(replicas[0])}) is True


def _allocate(r: Replica, segs: list[segments.Segment]) -> dict[str, Any]:
    """Submit ``segs``, decide every sampled one valid; the task's allocation."""
    for s in segs:
        assert r.submit(s)["ok"], s.index
    for s in segs:
        rec = r.task["segments"][f"{s.miner.lower()}/{s.index}"]
        if rec["sampled"] and rec["decided"] is None:
            r.verdicts(s, valid=True)
    r.audited()
    alloc = r.task["allocation"]
    assert alloc is not None
    return dict(alloc)


def test_only_a_gap_free_chain_from_zero_earns() -> None:
    """A miner that withholds segment 0 (the audited anchor) and starts segment 1 from
    weights of its own is paid nothing for it; the honest node takes the pool."""
    r = Replica(nodes=2)
    honest, teleport = keys.generate(), keys.generate()
    alloc = _allocate(
        r,
        [
            *(seg(honest, i, f"c{i}", f"c{i + 1}") for i in range(3)),
            seg(teleport, 1, "pretrained", "t2", rank=1),
            seg(teleport, 2, "t2", "t3", rank=1),
        ],
    )
    assert alloc["payees"] and teleport.address not in alloc["payees"]
    assert honest.address in alloc["payees"]
    assert alloc["targetMet"] is True


def test_target_metric_needs_a_chained_final() -> None:
    miner = keys.generate()
    chain = [seg(miner, i, f"c{i}", f"c{i + 1}") for i in range(3)]
    target = {"name": "evalLoss", "threshold": 1.0}
    # Segments 1 and 2 only: the final's metrics come from a chain with no anchor.
    assert _allocate(Replica(target=target), chain[1:])["targetMet"] is False
    assert _allocate(Replica(target=target), chain)["targetMet"] is True
