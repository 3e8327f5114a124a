"""A replica that installs a NEW-VIEW whose checkpoint it has not reached takes the batches
up to that checkpoint only by state transfer (TOCS 2002 §4.5.3: the checkpoint becomes its
low watermark).

Before, it kept its old low watermark while it fetched the state, and the NEW-VIEW had
dropped its entries of earlier views; so the faulty primary of the new view could
pre-prepare other batches at those sequence numbers, and f+1 lagging correct replicas with
the faulty one committed and executed them where another correct replica had executed the
batches committed in the earlier view.
"""

from __future__ import annotations

import dataclasses

from pot.validator import messages as m
from pot.validator.rejections import Rejection
from tests.validator.pbft_kit import CFG, Net, batch

K = 2
FAULTY = 1  # the primary of view 1


def test_batches_below_a_new_views_checkpoint_come_only_by_state_transfer() -> None:
    net = Net(dataclasses.replace(CFG, checkpoint_interval=K))
    # View 0: replicas 0 and 1 execute seq 1..K (so both take checkpoint K); replica 2 prepares
    # and commits them but sees no COMMIT; replica 3 sees nothing.
    for ts in range(1, K + 1):
        net.perform(0, net.reps[0].submit(m.Request(client="c", ts=ts, op=b"good")))
    net.pump(drop=lambda src, dst, msg: dst == 3 or (dst == 2 and isinstance(msg, m.Commit)))
    good = dict(net.executed[0])
    assert sorted(good) == list(range(1, K + 1)) and net.executed[1] == good
    assert not net.executed[2] and not net.executed[3]
    # View 1: its NEW-VIEW starts from checkpoint K (replicas 0 and 1 list it). Replicas 2 and
    # 3 fetch that state; the network holds the STATE-REPLYs back.
    for i in (0, 2, 3):
        net.suspect(i)
    no_state = lambda src, dst, msg: isinstance(msg, m.StateReply)  # noqa: E731
    net.pump(drop=no_state)
    assert all(r.view == 1 and not r.view_changing for r in net.reps)
    assert net.reps[0].h == K and net.reps[2].last_exec == net.reps[3].last_exec == 0
    # The faulty primary pre-prepares other batches at 1..K to the lagging two, and commits.
    for seq in range(1, K + 1):
        evil = batch(b"evil", view=1, seq=seq, ts=100 + seq)
        for i in (2, 3):
            net.send(FAULTY, i, evil)
            net.send(FAULTY, i, m.Commit(view=1, seq=seq, digest=evil.digest, replica=FAULTY))
    net.pump(drop=no_state)
    for i in (2, 3):  # (before: both executed ``evil`` at 1..K, where 0 executed ``good``)
        assert all(net.executed[i].get(s) in (None, good[s]) for s in good), "safety violated"
        assert net.reps[i].rejected[Rejection.STALE] >= K
    # The state comes: both hold checkpoint K, and the set goes on from there.
    for _ in range(20):
        net.tick(CFG.retransmit_ms)
    assert all(r.last_exec >= K for r in net.reps)
    digests = {r.own_cks[K][0] for r in net.reps if K in r.own_cks}
    assert len(digests) == 1
