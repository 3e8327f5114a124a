"""State transfer past the frame limit: a STATE-REPLY carries up to ``messages.MAX_SNAPSHOT``
(the transport lets it exceed ``max_frame``: test_transport); a bigger snapshot is not sent in
vain but reported as an error naming its size."""

from __future__ import annotations

import logging
import random

import pytest

from pot.validator import actions, checkpointing, pbft, simulating
from pot.validator import messages as m


def _replica_with_checkpoint(snap: bytes) -> pbft.Replica:
    secrets = [bytes([i + 1]) * 32 for i in range(4)]
    rep = pbft.Replica(
        config=pbft.Config(n=4, f=1, open_clients=True),
        replica_id=1,
        app=simulating.ChainApp(),
        crypto=simulating.SimCrypto(1, secrets, random.Random(1)),
    )
    rep.h = 64
    rep.own_cks[64] = (m.sha256(snap), snap)
    return rep


def _replies(acts: list[actions.Action]) -> list[m.StateReply]:
    return [a.msg for a in acts if isinstance(a, actions.Send) and isinstance(a.msg, m.StateReply)]


def test_state_reply_up_to_the_snapshot_limit_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(m, "MAX_SNAPSHOT", 100)
    rep = _replica_with_checkpoint(b"s" * 100)
    (reply,) = _replies(rep.on_message(m.StateRequest(seq=64, replica=2), 2))
    assert reply.seq == 64 and len(reply.snapshot) == 100


def test_oversized_snapshot_is_reported_not_sent(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(m, "MAX_SNAPSHOT", 100)
    rep = _replica_with_checkpoint(b"s" * 101)
    caplog.set_level(logging.ERROR, logger=checkpointing.log.name)  # `pot simulate` mutes it
    assert not _replies(rep.on_message(m.StateRequest(seq=64, replica=2), 2))
    assert rep.stats["state_too_big"] == 1
    assert "snapshot is 101 bytes" in caplog.text
