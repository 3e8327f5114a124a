"""The backlog of pending requests is bounded in bytes too, not only in count: a faulty peer
relaying large unauthenticated requests is refused once their ops pass MAX_PENDING_BYTES,
and room comes back as requests leave."""

from __future__ import annotations

import random

import pytest

from pot.validator import admission, pbft, simulating
from pot.validator import messages as m
from pot.validator.rejections import Rejection

SECRETS = [bytes([i + 1]) * 32 for i in range(4)]


def test_pending_ops_are_bounded_in_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admission, "MAX_PENDING_BYTES", 10 * 1000)
    backup = pbft.Replica(
        config=pbft.Config(n=4, f=1, open_clients=True),
        replica_id=1,
        app=simulating.ChainApp(),
        crypto=simulating.SimCrypto(1, SECRETS, random.Random(1)),
    )

    def relay(ts: int) -> None:
        backup.on_message(m.Request(client="load", ts=ts, op=b"x" * 1000), 3)

    for ts in range(1, 16):
        relay(ts)
    assert len(backup.pending) == 10
    assert backup.rejected[Rejection.OVERSIZED] == 5
    recounted = backup.pending_recount
    for key in list(backup.pending)[:4]:  # executed: they leave without being subtracted
        del backup.pending[key]
    relay(16)  # within RECOUNT_MS of the last count: refused without counting again
    assert backup.rejected[Rejection.OVERSIZED] == 6 and backup.pending_recount == recounted
    backup.on_tick(admission.RECOUNT_MS)
    for ts in range(17, 23):
        relay(ts)
    assert len(backup.pending) == 10  # 6 + 4 that fit again
    assert backup.rejected[Rejection.OVERSIZED] == 8
    assert backup.pending_bytes == 10 * 1000
