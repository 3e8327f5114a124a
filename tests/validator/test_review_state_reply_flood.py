"""A replica answers one peer's STATE-REQUESTs for a checkpoint at most once per view-change
timeout.

A STATE-REQUEST is a dozen bytes and its STATE-REPLY the whole snapshot (up to 1 GiB), each
encoded afresh into the peer's send queue (20,000 messages deep). Before, every one was
answered: a faulty peer that sent them without reading filled a correct replica's memory with
copies of its snapshot, and a correct one fetching a large snapshot, which asks again every
``retransmit_ms``, queued a new copy each time until the first arrived.
"""

from __future__ import annotations

import dataclasses

from pot.validator import actions
from pot.validator import messages as m
from pot.validator.rejections import Rejection
from tests.validator.pbft_kit import CFG, Net

K = 2


def _replies(acts: list[actions.Action]) -> int:
    return sum(isinstance(a, actions.Send) and isinstance(a.msg, m.StateReply) for a in acts)


def test_state_requests_are_answered_once_per_timeout_per_peer() -> None:
    net = Net(dataclasses.replace(CFG, checkpoint_interval=K))
    for ts in range(1, K + 1):
        net.perform(0, net.reps[0].submit(m.Request(client="c", ts=ts, op=b"x")))
    net.pump()
    rep = net.reps[0]
    assert rep.h == K
    ask = m.StateRequest(seq=K, replica=3)
    sent = sum(_replies(rep.on_message(ask, 3)) for _ in range(100))
    assert sent == 1
    assert rep.rejected[Rejection.DUPLICATE] >= 99
    assert _replies(rep.on_message(m.StateRequest(seq=K, replica=2), 2)) == 1  # another peer
    rep.on_tick(rep.now + CFG.view_change_timeout_ms)  # the reply may have been lost: again
    assert _replies(rep.on_message(ask, 3)) == 1
