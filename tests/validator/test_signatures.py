"""A peer that sends bad signatures pays for one check per DISTRUST_MS, not one per message.

Bad signatures cost nothing to make and an ECDSA verification to refuse. The failed check is
charged to the sending peer (a correct replica never sends or relays one), whose messages that
need a check are then refused unchecked for a while; its votes, which need none, still count.
"""

from __future__ import annotations

import random
from dataclasses import replace

from pot.validator import messages as m
from pot.validator import pbft, signatures, simulating, viewchanging
from pot.validator.rejections import Rejection
from tests.validator.test_review_forged_cost import SECRETS, CountingCrypto

CFG = pbft.Config(n=4, f=1)


def _replica(rid: int, crypto: simulating.SimCrypto | None = None) -> pbft.Replica:
    return pbft.Replica(
        config=CFG,
        replica_id=rid,
        app=simulating.ChainApp(),
        crypto=crypto or simulating.SimCrypto(rid, SECRETS, random.Random(rid)),
    )


def _view_change(rid: int, view: int, *, bad: bool = False) -> m.ViewChange:
    vc = viewchanging.own_view_change(_replica(rid), view)
    return replace(vc, signature=b"\0" * len(vc.signature)) if bad else vc


def test_a_flood_of_bad_view_changes_costs_one_check_per_distrust_period() -> None:
    crypto = CountingCrypto(1)
    backup = _replica(1, crypto)
    floods = 300
    for view in range(1, floods + 1):  # each a new, higher view: no DUPLICATE shortcut
        backup.on_message(_view_change(3, view, bad=True), 3)
    assert crypto.checks == 1
    assert backup.rejected[Rejection.BAD_SIGNATURE] == 1
    assert backup.rejected[Rejection.DISTRUSTED] == floods - 1
    assert 3 not in backup.vcs
    backup.on_message(_view_change(2, 1), 2)  # other peers are untouched
    assert backup.vcs[2].view == 1
    backup.on_tick(signatures.DISTRUST_MS)  # the period is over: 3 is heard again
    backup.on_message(_view_change(3, 1), 3)
    assert backup.vcs[3].view == 1
    assert crypto.checks == 3


def test_a_forged_own_request_distrusts_its_sender_but_not_its_votes() -> None:
    crypto = CountingCrypto(1)
    backup = _replica(1, crypto)
    for ts in range(1, 101):
        junk = m.Request(client=pbft.client_name(3), ts=ts, op=b"junk", sig=b"\1" * 64)
        backup.on_message(junk, 3)
    assert crypto.checks == 1
    assert backup.rejected[Rejection.FORGED_REQUEST] == 1
    assert backup.rejected[Rejection.DISTRUSTED] == 99
    assert not backup.pending
    prepare = m.Prepare(view=0, seq=1, digest=b"\2" * 32, replica=3)
    backup.on_message(prepare, 3)
    assert backup.rejected[Rejection.DISTRUSTED] == 99  # a MAC'd vote needs no signature
    assert 3 in backup.log[1].prepares[b"\2" * 32]


def test_a_bad_new_view_is_charged_to_the_peer_that_relayed_it() -> None:
    backup = _replica(2)
    nv = m.NewView(
        view=1, view_changes=(), checkpoint=(0, b""), chosen=(), replica=1, signature=b"\3" * 64
    )
    viewchanging.on_new_view(backup, nv, 3, [])  # replica 1's NEW-VIEW, relayed by 3
    assert set(backup.distrust_until) == {3}
    assert backup.on_message(nv, 3) == [] and backup.rejected[Rejection.DISTRUSTED] == 1
    backup.on_message(nv, 0)  # another relay of the same junk is checked, and charged
    assert set(backup.distrust_until) == {0, 3}


def test_a_local_client_bad_signature_distrusts_no_peer() -> None:
    backup = _replica(1)
    unsigned = m.Request(client=pbft.client_name(1), ts=1, op=b"x", sig=b"\4" * 64)
    assert backup.submit(unsigned) == []
    assert backup.rejected[Rejection.FORGED_REQUEST] == 1
    assert not backup.distrust_until and not backup.pending
