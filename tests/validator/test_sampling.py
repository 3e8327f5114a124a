"""Private audit sampling (pot.validator.app, steps 3 and 6), on the pure app.

Only a node's segment 0 and final segment are public. Every other segment is
replayed by each replica that draws it with its own secret coin, which neither
the miner nor a faulty primary can predict or grind. A failed private replay
is a challenge that makes the segment public. The allocation waits until 2f+1
replicas say they finished their private audits.
"""

from __future__ import annotations

import hashlib

from pot import keys, signing
from pot.validator import app as vapp
from pot.validator import verdicts
from tests.validator.test_chaining import REPLICAS, TASK, Replica, seg
from tests.validator.test_verdicts import vote


def _said_audited(r: Replica, replicas: range) -> None:
    for i in replicas:
        sig = signing.sign(
            REPLICAS[i], verdicts.VERDICT_DOMAIN, verdicts.AUDITED_TYPES, "Audited", {"task": TASK}
        )
        assert r.execute(vapp.op("audited", task=TASK, replica=i, signature=sig))["ok"]


def test_only_anchor_and_final_are_public_whatever_the_rate() -> None:
    r, miner = Replica(rate=1.0), keys.generate()
    flags = [r.submit(seg(miner, i, f"c{i}", f"c{i + 1}"))["sampled"] for i in range(3)]
    assert flags == [True, False, True]  # the middle one is left to the replicas' private coins
    middle = r.task["segments"][f"{miner.address.lower()}/1"]
    assert middle["decided"] is True and middle["json"]  # accepted unless challenged; body kept
    assert [(t, d) for t, d, _, _ in r.app.private_candidates()] == [(TASK, middle["digest"])]
    # A passed private audit is not ordered: nothing to decide.
    assert vote(r, seg(miner, 1, "c1", "c2"), 0, True)["reason"] == "NOT_ASSIGNED"


def test_allocation_waits_for_2f_plus_1_replicas_done_with_private_audits() -> None:
    r, miner = Replica(rate=1.0), keys.generate()
    chain = [seg(miner, i, f"c{i}", f"c{i + 1}") for i in range(3)]
    for s in chain:
        r.submit(s)
    for s in (chain[0], chain[2]):
        for i in range(3):
            vote(r, s, i, True)
    assert r.app.awaiting_audited(0) == [TASK]
    _said_audited(r, range(2))
    assert r.task["allocation"] is None  # f+1 is not enough: one of them may be faulty
    _said_audited(r, range(2, 3))
    alloc = r.task["allocation"]
    assert alloc is not None and miner.address in alloc["payees"]
    assert r.app.private_candidates() == [] and r.app.awaiting_audited(3) == []
    # Closed: a late challenge changes nothing.
    assert vote(r, chain[1], 3, False, "LOSS_MISMATCH")["reason"] == "TASK_CLOSED"


def test_a_challenge_makes_the_segment_public_and_2f_plus_1_decide() -> None:
    for others, slashed in ((True, False), (False, True)):
        r, miner = Replica(rate=1.0), keys.generate()
        chain = [seg(miner, i, f"c{i}", f"c{i + 1}") for i in range(3)]
        for s in chain:
            r.submit(s)
        # Replica 1's private replay failed: it orders its invalid verdict.
        assert vote(r, chain[1], 1, False, "LOSS_MISMATCH")["decided"] is None
        rec = r.task["segments"][f"{miner.address.lower()}/1"]
        assert rec["sampled"] and rec["decided"] is None and rec["challenged"] == 1
        assert (TASK, rec["json"]) in r.app.pending_audits(0)  # now everyone replays it
        vote(r, chain[1], 0, others, "" if others else "LOSS_MISMATCH")
        vote(r, chain[1], 2, others, "" if others else "LOSS_MISMATCH")
        assert rec["decided"] is others  # a lone (faulty) challenger loses; a real one wins
        for s in (chain[0], chain[2]):
            for i in range(3):
                vote(r, s, i, True)
        _said_audited(r, range(3))
        alloc = r.task["allocation"]
        assert alloc is not None and (miner.address in alloc["slashed"]) is slashed


def test_private_coins_are_secret_per_replica_and_hit_the_rate() -> None:
    secrets = [verdicts.coin_secret(k.secret) for k in REPLICAS]
    assert len(set(secrets)) == 4 and all(k.secret not in secrets for k in REPLICAS)
    rate = int(0.1 * verdicts.SCALE)
    digests = ["0x" + hashlib.sha256(str(i).encode()).hexdigest() for i in range(4000)]
    draws = [[verdicts.audit_coin(s, TASK, d) < rate for d in digests] for s in secrets]
    for mine in draws:
        assert 320 <= sum(mine) <= 480  # ~10% of 4000
    # Independent across replicas: two agree on "audit" about rate^2 of the time.
    both = sum(a and b for a, b in zip(draws[0], draws[1], strict=True))
    assert both < 80
    assert verdicts.audit_coin(secrets[0], TASK, digests[0]) == verdicts.audit_coin(
        secrets[0], TASK, digests[0]
    )  # deterministic: a restarted replica redraws the same coins
