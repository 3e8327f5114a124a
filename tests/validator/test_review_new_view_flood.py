"""A replica re-sends its last NEW-VIEW to one peer at most once per view-change timeout.

A NEW-VIEW carries 2f+1 VIEW-CHANGEs with their batches' bodies, so it can be large. Before,
every STATUS from an older view (or a view change) and every stale VIEW-CHANGE, answered
before any signature check, got a fresh copy in the sender's send queue (bounded by message
count, not bytes): a faulty peer that sent them without reading filled a correct replica's
memory. A correct replica that lost the NEW-VIEW must still get it again.
"""

from __future__ import annotations

from pot.validator import actions
from pot.validator import messages as m
from pot.validator.rejections import Rejection
from tests.validator.pbft_kit import CFG, N, Net


def _new_views(acts: list[actions.Action]) -> int:
    return sum(isinstance(a, actions.Send) and isinstance(a.msg, m.NewView) for a in acts)


def _to_view_1(net: Net, drop_to: int | None = None) -> None:
    for i in range(N):
        net.suspect(i)
    net.pump(lambda _s, dst, msg: dst == drop_to and isinstance(msg, m.NewView))
    assert all(r.view == 1 and not r.view_changing for i, r in enumerate(net.reps) if i != drop_to)


def test_new_view_resends_are_limited_per_peer_and_timeout() -> None:
    net = Net()
    _to_view_1(net)
    rep = net.reps[1]  # the primary of view 1; backups hold the NEW-VIEW too
    assert rep.last_nv is not None and rep.last_nv.view == 1
    rep.on_tick(net.now + CFG.view_change_timeout_ms)  # past those sent during the change
    before = rep.rejected.copy()
    old = m.Status(view=0, normal=True, h=0, last_exec=0, replica=3)
    sent = sum(_new_views(rep.on_message(old, 3)) for _ in range(100))
    stale = net.reps[3].vcs[3]  # its VIEW-CHANGE for view 1: stale, answered unchecked
    sent += sum(_new_views(rep.on_message(stale, 3)) for _ in range(100))
    assert sent == 1
    limited = Rejection.RATE_LIMITED
    assert rep.rejected[limited] - before[limited] == 199
    changing = m.Status(view=1, normal=False, h=0, last_exec=0, replica=2)
    assert _new_views(rep.on_message(changing, 2)) == 1  # another peer: its own allowance
    rep.on_tick(rep.now + CFG.view_change_timeout_ms)  # the copy may have been lost: again
    assert _new_views(rep.on_message(old, 3)) == 1
    assert _new_views(rep.on_message(old, 3)) == 0


def test_a_replica_that_lost_the_new_view_still_joins_and_executes() -> None:
    net = Net()
    _to_view_1(net, drop_to=3)
    assert net.reps[3].view_changing
    net.perform(1, net.reps[1].submit(m.Request(client="c", ts=1, op=b"x")))
    for _ in range(3 * CFG.view_change_timeout_ms // CFG.retransmit_ms):
        net.tick(CFG.retransmit_ms)
        if 1 in net.executed[3]:
            break
    assert net.reps[3].view == 1 and not net.reps[3].view_changing
    assert net.executed[3].get(1) == net.executed[1][1]
