"""One faulty replica's votes cannot crowd out the correct replicas' votes.

An entry kept at most n digests per phase, but any replica could vote for several, so a
faulty one that sent PREPAREs and COMMITs for n junk digests at a (view, seq) got every
later vote for a new digest refused as EQUIVOCATION: the correct replicas' votes that arrived
before the PRE-PREPARE (another connection) were dropped, and the sequence number waited for
retransmission. Now each replica has one vote per phase per (view, seq).
"""

from __future__ import annotations

import random

from pot.validator import messages as m
from pot.validator import pbft, simulating
from pot.validator.rejections import Rejection

SECRETS = [bytes([i + 1]) * 32 for i in range(4)]


def test_junk_votes_do_not_crowd_out_votes_that_arrive_before_the_pre_prepare() -> None:
    crypto = simulating.SimCrypto(1, SECRETS, random.Random(1))
    rep = pbft.Replica(
        config=pbft.Config(n=4, f=1, open_clients=True),
        replica_id=1,
        app=simulating.ChainApp(),
        crypto=crypto,
    )
    for k in range(4):  # faulty replica 3
        rep.on_message(m.Prepare(view=0, seq=1, digest=bytes([k]) * 32, replica=3), 3)
        rep.on_message(m.Commit(view=0, seq=1, digest=bytes([k]) * 32, replica=3), 3)
    assert rep.rejected[Rejection.EQUIVOCATION] == 6  # its second to fourth of each
    req = m.Request(client="c", ts=1, op=b"x")
    pp = m.pre_prepare(view=0, seq=1, nonce=b"n", batch=(req,), replica=0)
    # The correct replicas' votes overtake the PRE-PREPARE.
    assert rep.on_message(m.Prepare(view=0, seq=1, digest=pp.digest, replica=2), 2) == []
    for r in (0, 2):
        rep.on_message(m.Commit(view=0, seq=1, digest=pp.digest, replica=r), r)
    assert rep.rejected[Rejection.EQUIVOCATION] == 6
    rep.on_message(pp, 0)
    assert rep.last_exec == 1
