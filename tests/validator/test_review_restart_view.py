"""A replica restarted from disk past view 0 comes back view-changing in its crash view.

The disk keeps the view a replica entered, not whether it installed that view's NEW-VIEW.
Before this, a restarted replica resumed the view in the normal case, so a faulty primary of
that view could skip the NEW-VIEW and pre-prepare any batch at a sequence number whose batch
was committed in an earlier view: with f faulty replicas and f+1 restarted ones it committed
it (TOCS 2002 §4.5: the NEW-VIEW is what carries committed batches into a view).
"""

from __future__ import annotations

import dataclasses
import random

from pot.validator import actions, simulating
from pot.validator import messages as m
from pot.validator.rejections import Rejection
from tests.validator.pbft_kit import CFG, SECRETS, N, Net, batch


def test_restarted_replicas_refuse_a_view_without_its_new_view() -> None:
    """Replica 1 is faulty (the primary of view 1); replicas 2 and 3 restart in view 1."""
    net = Net()
    good = batch(b"good", view=0)
    # View 0: replica 0 commits ``good`` at 1 (with the faulty replica's votes); replica 2
    # prepares it; replica 3 only pre-prepares it.
    out: list[actions.Action] = []
    net.reps[0].accept_pre_prepare(good, out)
    net.perform(0, out)
    for dst in (1, 2, 3):
        net.send(0, dst, good)
    net.q.clear()
    net.send(1, 0, m.Prepare(view=0, seq=1, digest=good.digest, replica=1))
    net.send(2, 0, m.Prepare(view=0, seq=1, digest=good.digest, replica=2))
    net.send(1, 0, m.Commit(view=0, seq=1, digest=good.digest, replica=1))
    net.send(2, 0, m.Commit(view=0, seq=1, digest=good.digest, replica=2))
    net.send(1, 2, m.Prepare(view=0, seq=1, digest=good.digest, replica=1))
    net.send(3, 2, m.Prepare(view=0, seq=1, digest=good.digest, replica=3))
    net.q.clear()
    assert net.executed[0] == {1: good.digest}
    # Replicas 2 and 3 suspect primary 0, enter view 1, crash, and restart from their disks.
    for i in (2, 3):
        net.perform(i, net.reps[i].on_tick(CFG.view_change_timeout_ms + 1))
        assert net.reps[i].view == 1
    net.q.clear()
    net.now = CFG.view_change_timeout_ms + 1
    for i in (2, 3):
        net.restart(i)
        assert net.reps[i].view == 1
    # The faulty primary of view 1 skips the NEW-VIEW and pre-prepares another batch at 1.
    evil = batch(b"evil", view=1)
    for i in (2, 3):
        net.send(1, i, evil)
        net.send(1, i, m.Commit(view=1, seq=1, digest=evil.digest, replica=1))
    net.pump()
    for i in (2, 3):  # (before: both committed ``evil`` at 1, where replica 0 has ``good``)
        assert net.executed[i].get(1) in (None, good.digest), "safety violated"
        assert net.reps[i].rejected[Rejection.WRONG_VIEW] >= 1
    # Whatever view the set then settles in, seq 1 holds ``good`` everywhere.
    for _ in range(200):
        net.tick(100)
    assert all(ex.get(1) == good.digest for ex in net.executed), net.executed


def test_a_restarted_replica_refuses_a_new_view_contradicting_its_log() -> None:
    """A replica that prepared ``a`` at (1, 1) under the NEW-VIEW it installed, then crashed,
    does not install a second NEW-VIEW for view 1 that puts ``b`` there."""
    net = Net()
    for i in range(N):  # everyone suspects primary 0: view 1 (primary 1)
        net.suspect(i)
    net.pump()
    assert all(r.view == 1 and not r.view_changing for r in net.reps)
    first = net.reps[1].last_nv
    assert first is not None
    a = batch(b"a", view=1)
    net.send(1, 2, a)
    net.q.clear()
    net.restart(2)
    assert net.reps[2].view_changing
    # A NEW-VIEW for view 1 that re-proposes ``b`` at 1: three genuine VIEW-CHANGEs for view 1,
    # two claiming ``b`` prepared at 1 in view 0 (replica 3's and the faulty 1's).
    b = batch(b"b", view=0)
    vcs = []
    for r in (0, 1, 3):
        crypto = simulating.SimCrypto(r, SECRETS, random.Random(r))
        vc = m.ViewChange(
            view=1,
            h=0,
            checkpoints=((0, net.reps[r].own_cks[0][0]),),
            prepared=(m.PEntry(seq=1, digest=b.digest, view=0),) if r != 0 else (),
            preprepared=(m.PEntry(seq=1, digest=b.digest, view=0),) if r != 0 else (),
            batches=(m.Batch(nonce=b.nonce, requests=b.batch),) if r != 0 else (),
            replica=r,
        )
        vcs.append(dataclasses.replace(vc, signature=crypto.sign(m.signing_bytes(vc))))
    nv = m.NewView(
        view=1,
        view_changes=tuple(vcs),
        checkpoint=first.checkpoint,
        chosen=((1, b.digest),),
        replica=1,
    )
    crypto1 = simulating.SimCrypto(1, SECRETS, random.Random(1))
    nv = dataclasses.replace(nv, signature=crypto1.sign(m.signing_bytes(nv)))
    outs = net.reps[2].on_message(nv, 1)
    assert net.reps[2].rejected[Rejection.EQUIVOCATION] == 1
    assert net.reps[2].view_changing
    assert not [a for a in outs if isinstance(a, actions.Send)]
    # The NEW-VIEW it did install, re-sent by a peer, lets it back into view 1.
    net.send(0, 2, first)
    assert not net.reps[2].view_changing and net.reps[2].view == 1


def test_a_set_restarted_all_together_moves_on() -> None:
    """Nobody holds view 1's NEW-VIEW after a restart of all four: the timer to view 2 runs."""
    net = Net()
    for i in range(N):
        net.suspect(i)
    net.pump()
    assert all(r.view == 1 and not r.view_changing for r in net.reps)
    req = m.Request(client="c", ts=1, op=b"x")
    net.perform(0, net.reps[0].submit(req))
    net.pump()
    assert all(ex.get(1) is not None for ex in net.executed)
    for i in range(N):
        net.restart(i)
    req2 = m.Request(client="c", ts=2, op=b"y")
    net.perform(3, net.reps[3].submit(req2))
    for _ in range(100):
        net.tick(100)
    assert all(not r.view_changing and r.view >= 2 for r in net.reps)
    assert all(ex.get(2) is not None for ex in net.executed), net.executed


def test_a_replica_restarted_while_changing_views_resends_its_view_change() -> None:
    net = Net()
    rep = net.reps[2]
    net.suspect(2)
    before = rep.vcs[2]
    net.q.clear()
    net.restart(2)
    again = net.reps[2].vcs.get(2)
    assert again is not None and again.view == before.view == 1
    outs = net.reps[2].on_tick(net.now + CFG.retransmit_ms * 10)
    assert [a.msg for a in outs if isinstance(a, actions.Send) and a.msg == again]
