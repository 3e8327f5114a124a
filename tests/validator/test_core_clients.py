"""Client names bound to replicas: a faulty replica cannot act as a correct one's client.

The shell orders every API request under its replica's name (``pbft.client_name``). Before
the binding, replica 3 could send REQUESTs under ``r1`` with huge timestamps; once 2 x
DEDUP_WINDOW of them executed, r1's deduplication floor sat far above its real timestamps
and its real requests (segments, verdicts, allocation signatures) were dropped as executed.
"""

from __future__ import annotations

import random
from collections import deque

from pot.validator import actions, pbft, simulating
from pot.validator import messages as m
from pot.validator.rejections import Rejection

N = 4


class _Net:
    """Four pure replicas and a FIFO of encoded messages: no clock, no I/O."""

    def __init__(self) -> None:
        secrets = [bytes([i + 1]) * 32 for i in range(N)]
        cfg = pbft.Config(n=N, f=1)
        self.apps = [simulating.ChainApp() for _ in range(N)]
        self.reps = [
            pbft.Replica(
                config=cfg,
                replica_id=i,
                app=self.apps[i],
                crypto=simulating.SimCrypto(i, secrets, random.Random(i)),
            )
            for i in range(N)
        ]
        self.q: deque[tuple[int, int, bytes]] = deque()
        self.executed: list[set[tuple[str, int]]] = [set() for _ in range(N)]
        self.now = 0

    def perform(self, i: int, acts: list[actions.Action]) -> None:
        for a in acts:
            if isinstance(a, actions.Send):
                data = m.encode(a.msg)
                for p in [a.to] if a.to is not None else range(N):
                    if p != i:
                        self.q.append((i, p, data))
            elif isinstance(a, actions.Executed):
                self.executed[i].update(r.key for r in a.requests)

    def inject(self, src: int, dst: int, msg: m.Message) -> None:
        self.q.append((src, dst, m.encode(msg)))

    def pump(self) -> None:
        while self.q:
            src, dst, data = self.q.popleft()
            msg = m.decode(data)
            assert not isinstance(msg, Rejection)
            self.perform(dst, self.reps[dst].on_message(msg, src))

    def settle(self, ticks: int = 20) -> None:
        for _ in range(ticks):
            self.now += 50
            for i in range(N):
                self.perform(i, self.reps[i].on_tick(self.now))
            self.pump()


def test_peer_cannot_send_requests_under_another_replicas_client() -> None:
    net = _Net()
    victim = "r1"  # pbft.client_name(1), as the shell names it
    for k in range(2 * pbft.DEDUP_WINDOW + 1):  # replica 3 floods the primary as "r1"
        net.inject(3, 0, m.Request(client=victim, ts=2**62 + k, op=b"junk"))
    net.pump()
    net.settle()
    primary = net.reps[0]
    assert primary.rejected[Rejection.SPOOFED_SENDER] == 2 * pbft.DEDUP_WINDOW + 1
    assert all(rep.dedup.get(victim) is None for rep in net.reps)

    real = m.Request(client=victim, ts=1_700_000_000_000_000, op=b"segment")
    net.perform(1, net.reps[1].submit(real))  # forwarded by its own replica to the primary
    net.pump()
    net.settle()
    assert all(real.key in done for done in net.executed)


def test_honest_forwarding_and_unbound_clients_still_ordered() -> None:
    net = _Net()
    own = m.Request(client="r2", ts=5, op=b"own")
    net.perform(2, net.reps[2].submit(own))  # backup → primary, under its own name
    other = m.Request(client="c0", ts=1, op=b"other")  # not a replica's name: any peer may
    net.inject(3, 0, other)
    net.pump()
    net.settle()
    assert all({own.key, other.key} <= done for done in net.executed)
    assert not any(rep.rejected[Rejection.SPOOFED_SENDER] for rep in net.reps)


def test_primary_may_batch_other_replicas_requests() -> None:
    """Requests inside a PRE-PREPARE are the primary's to order, whoever's client they are."""
    net = _Net()
    req = m.Request(client="r1", ts=9, op=b"relayed")
    pp = m.pre_prepare(view=0, seq=1, nonce=b"n", batch=(req,), replica=0)
    net.reps[0].accept_pre_prepare(pp, [])
    for dst in (1, 2, 3):
        net.inject(0, dst, pp)
    net.pump()
    net.settle()
    assert all(req.key in done for done in net.executed[1:])
