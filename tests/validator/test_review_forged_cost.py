"""A faulty primary cannot make a backup check signatures without end.

A PRE-PREPARE is refused at its first forged request, but every bound-client request before
that one costs an ECDSA verification (~300 µs), and the cache of checked signatures holds
VERIFIED_CACHE of them: a primary that signed (or replayed) more requests than that could put
batch_size - 1 of them ahead of a forged one in each PRE-PREPARE, for as long as it liked.
After one forged request a backup refuses the rest of that primary's view unchecked.
"""

from __future__ import annotations

import random

from pot.validator import messages as m
from pot.validator import pbft, signatures, simulating
from pot.validator.rejections import Rejection

SECRETS = [bytes([i + 1]) * 32 for i in range(4)]


class CountingCrypto(simulating.SimCrypto):
    """SimCrypto that counts signature checks."""

    def __init__(self, rid: int) -> None:
        super().__init__(rid, SECRETS, random.Random(rid))
        self.checks = 0

    def verify(self, replica: int, data: bytes, signature: bytes) -> bool:
        self.checks += 1
        return super().verify(replica, data, signature)


def test_forged_pre_prepares_cost_one_batch_of_checks_per_view() -> None:
    crypto = CountingCrypto(1)
    cfg = pbft.Config(n=4, f=1)
    backup = pbft.Replica(config=cfg, replica_id=1, app=simulating.ChainApp(), crypto=crypto)
    primary = simulating.SimCrypto(0, SECRETS, random.Random(0))
    own = [  # the faulty primary's own requests, validly signed: more than the cache holds
        pbft.signed(m.Request(client=pbft.client_name(0), ts=t, op=b"x"), primary)
        for t in range(signatures.VERIFIED_CACHE + 2 * cfg.batch_size)
    ]
    forged = m.Request(client=pbft.client_name(2), ts=1, op=b"junk", sig=b"\0" * 32)
    per = cfg.batch_size - 1
    rounds = 50
    for k in range(rounds):
        at = (k * per) % (len(own) - per)
        batch = (*own[at : at + per], forged)
        pp = m.pre_prepare(view=0, seq=1, nonce=b"%d" % k, batch=batch, replica=0)
        backup.on_message(pp, 0)
    assert backup.rejected[Rejection.FORGED_REQUEST] == rounds
    assert backup.log.get(1) is None and not backup.pending
    assert crypto.checks <= cfg.batch_size  # before: rounds * batch_size
