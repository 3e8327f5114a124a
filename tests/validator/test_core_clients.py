"""Client names bound to replicas: a faulty replica cannot act as a correct one's client.

The shell orders every API request under its replica's name (``pbft.client_name``). Before
the binding, replica 3 could send REQUESTs under ``r1`` with huge timestamps; once 2 x
DEDUP_WINDOW of them executed, r1's deduplication floor sat far above its real timestamps
and its real requests (segments, verdicts, allocation signatures) were dropped as executed.
A faulty *primary* could do the same inside its PRE-PREPAREs, or put junk under the key of a
request r1 had sent it, until requests under a replica's name had to carry its signature.
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
        cfg = pbft.Config(n=N, f=1, open_clients=True)
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
        self.ops: list[list[bytes]] = [[] for _ in range(N)]
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
                self.ops[i].extend(r.op for r in a.requests)

    def own(self, i: int, ts: int, op: bytes) -> m.Request:
        """A request of replica i's own client, signed by it (as the shell sends them)."""
        return pbft.signed(m.Request(client=pbft.client_name(i), ts=ts, op=op), self.reps[i].crypto)

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

    real = net.own(1, 1_700_000_000_000_000, b"segment")
    net.perform(1, net.reps[1].submit(real))  # forwarded by its own replica to the primary
    net.pump()
    net.settle()
    assert all(real.key in done for done in net.executed)


def test_honest_forwarding_and_unbound_clients_still_ordered() -> None:
    net = _Net()
    own = net.own(2, 5, b"own")
    net.perform(2, net.reps[2].submit(own))  # backup → primary, under its own name
    other = m.Request(client="c0", ts=1, op=b"other")  # not a replica's name: any peer may
    net.inject(3, 0, other)
    net.pump()
    net.settle()
    assert all({own.key, other.key} <= done for done in net.executed)
    assert not any(rep.rejected[Rejection.SPOOFED_SENDER] for rep in net.reps)


def test_primary_may_batch_other_replicas_signed_requests() -> None:
    """Requests inside a PRE-PREPARE are the primary's to order, whoever's client they are,
    as long as a replica's own ones carry its signature."""
    net = _Net()
    req = net.own(1, 9, b"relayed")
    pp = m.pre_prepare(view=0, seq=1, nonce=b"n", batch=(req,), replica=0)
    net.reps[0].accept_pre_prepare(pp, [])
    for dst in (1, 2, 3):
        net.inject(0, dst, pp)
    net.pump()
    net.settle()
    assert all(req.key in done for done in net.executed[1:])


def test_primary_cannot_forge_requests_under_a_replicas_name() -> None:
    net = _Net()
    real = net.own(1, 9, b"verdict")
    for forged in (
        real._replace(op=b"junk"),  # the key of a request r1 sent, another operation
        real._replace(sig=b""),  # unsigned
        m.Request(client="r1", ts=2**62, op=b"junk", sig=net.own(2, 2**62, b"junk").sig),
        net.own(2, 2**62, b"junk")._replace(client="r1"),  # r2's signature, r1's name
    ):
        pp = m.pre_prepare(view=0, seq=1, nonce=b"n", batch=(forged,), replica=0)
        for dst in (1, 2, 3):  # a faulty primary sends it; every correct backup refuses it
            net.inject(0, dst, pp)
        net.pump()
    for rep in net.reps[1:]:
        assert rep.rejected[Rejection.FORGED_REQUEST] == 4
        assert rep.log.get(1) is None and rep.dedup.get("r1") is None
    # r1's real request still executes, under its own key, everywhere: after the view change,
    # since every backup refuses the rest of a view whose primary forged a request.
    net.perform(1, net.reps[1].submit(real))
    net.pump()
    net.settle(200)
    assert all(real.key in done for done in net.executed)
    assert net.ops == [[b"verdict"]] * N
    assert all(rep.view >= 1 for rep in net.reps)


def test_unsigned_requests_under_a_replicas_name_go_nowhere() -> None:
    net = _Net()
    unsigned = m.Request(client="r2", ts=3, op=b"x")
    assert net.reps[2].submit(unsigned) == []  # the shell always signs; a bug must not stall
    assert net.reps[2].rejected[Rejection.FORGED_REQUEST] == 1
    net.inject(2, 0, unsigned)  # a faulty r2 forwards it unsigned: the primary refuses it
    net.inject(2, 0, unsigned._replace(sig=b"\0" * 32))
    net.pump()
    assert net.reps[0].rejected[Rejection.FORGED_REQUEST] == 2
    assert not net.reps[0].pending
