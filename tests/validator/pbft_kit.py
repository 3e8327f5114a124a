"""Pure PBFT replicas wired by hand: a FIFO of encoded messages, in-memory disks, restarts.

For tests that script one adversarial schedule exactly (the simulator draws them at random).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

from pot.validator import actions, pbft, simulating, viewchanging
from pot.validator import messages as m
from pot.validator.rejections import Rejection

N = 4
CFG = pbft.Config(n=N, f=1, open_clients=True, checkpoint_interval=16, view_change_timeout_ms=1000)
SECRETS = [bytes([i + 1]) * 32 for i in range(N)]


class Net:
    """Four pure replicas with in-memory disks and a FIFO of encoded messages."""

    def __init__(self, cfg: pbft.Config = CFG) -> None:
        self.cfg = cfg
        self.disks = [simulating.Disk() for _ in range(N)]
        self.reps = [self._make(i, None) for i in range(N)]
        self.q: deque[tuple[int, int, bytes]] = deque()
        self.executed: list[dict[int, bytes]] = [{} for _ in range(N)]
        self.down: set[int] = set()
        self.now = 0

    def _make(self, i: int, durable: actions.Durable | None) -> pbft.Replica:
        crypto = simulating.SimCrypto(i, SECRETS, random.Random(i))
        app = simulating.ChainApp()
        return pbft.Replica(config=self.cfg, replica_id=i, app=app, crypto=crypto, durable=durable)

    def restart(self, i: int) -> None:
        self.reps[i] = self._make(i, self.disks[i].durable())
        self.reps[i].now = self.now

    def perform(self, i: int, acts: list[actions.Action]) -> None:
        for a in acts:
            self.disks[i].apply(a)
            if isinstance(a, actions.Send):
                data = m.encode(a.msg)
                for p in [a.to] if a.to is not None else range(N):
                    if p != i:
                        self.q.append((i, p, data))
            elif isinstance(a, actions.Committed):
                self.executed[i][a.seq] = a.digest

    def suspect(self, i: int) -> None:
        """Replica i times out on its primary: a VIEW-CHANGE for the next view."""
        out: list[actions.Action] = []
        viewchanging.start(self.reps[i], self.reps[i].view + 1, out)
        self.perform(i, out)

    def send(self, src: int, dst: int, msg: m.Message) -> None:
        self.perform(dst, self.reps[dst].on_message(msg, src))

    def pump(self, drop: Callable[[int, int, m.Message], bool] | None = None) -> None:
        """Deliver until quiet; ``drop(src, dst, msg)`` loses the messages it picks."""
        while self.q:
            src, dst, data = self.q.popleft()
            if src in self.down or dst in self.down:
                continue
            msg = m.decode(data)
            if isinstance(msg, Rejection):  # as the shell does (``replica.Node.on_messages``)
                self.reps[dst].reject(msg)
                continue
            if drop is not None and drop(src, dst, msg):
                continue
            self.perform(dst, self.reps[dst].on_message(msg, src))

    def tick(self, ms: int) -> None:
        self.now += ms
        for i in range(N):
            if i not in self.down:
                self.perform(i, self.reps[i].on_tick(self.now))
        self.pump()


def batch(op: bytes, view: int, seq: int = 1, ts: int = 7) -> m.PrePrepare:
    """A one-request PRE-PREPARE by view ``view``'s primary."""
    req = m.Request(client="c", ts=ts, op=op)
    return m.pre_prepare(view=view, seq=seq, nonce=op, batch=(req,), replica=view % N)
