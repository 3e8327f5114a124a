"""How the replicated app turns audit verdicts into a decision (n = 4, f = 1).

The first 2f+1 committed verdicts decide: valid iff at least f+1 of them say
valid. Checked here for every order in which the primary could commit the
verdicts of three correct replicas and one faulty one, and for the case the
old rule (2f+1 *matching* votes) left undecided forever: correct replays that
straddle the threshold.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from pot import keys, signing
from pot.trainer import segments
from pot.validator import app as vapp
from pot.validator import verdicts
from tests.validator.test_chaining import REPLICAS, TASK, Replica, seg


def vote(r: Replica, s: segments.Segment, replica: int, valid: bool, reason: str = "") -> Any:
    digest = segments.digest(s)
    msg = verdicts.verdict_message(
        task=TASK, miner=s.miner, index=s.index, digest=digest, valid=valid, reason=reason
    )
    sig = signing.sign(
        REPLICAS[replica], verdicts.VERDICT_DOMAIN, verdicts.VERDICT_TYPES, "Verdict", msg
    )
    return r.execute(
        vapp.op(
            "verdict",
            task=TASK,
            miner=s.miner,
            index=s.index,
            segment=digest,
            valid=valid,
            reason=reason,
            replica=replica,
            signature=sig,
        )
    )


def sampled_segment(r: Replica) -> segments.Segment:
    s = seg(keys.generate(), 0, "init", "c1")  # segment 0 is always audited
    assert r.submit(s)["sampled"] is True
    return s


@pytest.mark.parametrize("truth", [True, False])
def test_correct_replicas_win_in_every_commit_order(truth: bool) -> None:
    faulty = 3
    for order in itertools.permutations(range(4)):
        r = Replica()
        s = sampled_segment(r)
        decided = None
        for replica in order:
            valid = (not truth) if replica == faulty else truth
            result = vote(r, s, replica, valid, "" if valid else "DISTANCE_OVER_THRESHOLD")
            if result.get("decided") is not None and decided is None:
                decided = result["decided"]
        assert decided is truth, order


def test_split_honest_replays_still_decide() -> None:
    # Two replicas measured just under the threshold, one just over: the old
    # rule waited for 2f+1 matching votes (forever if the fourth is faulty).
    r = Replica()
    s = sampled_segment(r)
    assert vote(r, s, 0, True)["decided"] is None
    assert vote(r, s, 1, False, "DISTANCE_OVER_THRESHOLD")["decided"] is None
    assert vote(r, s, 2, True)["decided"] is True  # 2 = f+1 valid among the first 3
    assert vote(r, s, 3, False, "DISTANCE_OVER_THRESHOLD")["duplicate"] is True
    assert r.task["rejections"] == []


def test_minority_valid_is_rejected_with_the_commonest_reason() -> None:
    r = Replica()
    s = sampled_segment(r)
    vote(r, s, 0, False, "NOT_BIT_EXACT")
    vote(r, s, 1, True)
    assert vote(r, s, 2, False, "NOT_BIT_EXACT")["decided"] is False
    assert [(x["index"], x["reason"]) for x in r.task["rejections"]] == [(0, "NOT_BIT_EXACT")]


def test_validators_own_audit_failures_never_slash_the_miner() -> None:
    """AUDIT_ERROR (a validator-side bug or missing dependency) leaves the segment
    unverified, so unpaid, but the miner keeps its stake; a real rejection slashes."""
    outcomes = {}
    for reason in ("AUDIT_ERROR", "LOSS_MISMATCH"):
        r = Replica(nodes=2)
        faulty, honest = keys.generate(), keys.generate()
        for i in range(3):
            r.submit(seg(honest, i, f"h{i}", f"h{i + 1}"))
        chain = [seg(faulty, i, f"c{i}", f"c{i + 1}", rank=1) for i in range(3)]
        for s in chain:
            r.submit(s)
        for replica in range(3):
            vote(r, chain[0], replica, False, reason)
        for s in (seg(honest, 0, "h0", "h1"), seg(honest, 2, "h2", "h3"), chain[2]):
            for replica in range(3):
                vote(r, s, replica, True)
        r.audited()
        alloc = r.task["allocation"]
        assert alloc is not None
        outcomes[reason] = faulty.address in alloc["slashed"]
    assert outcomes == {"AUDIT_ERROR": False, "LOSS_MISMATCH": True}
