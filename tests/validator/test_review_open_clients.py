"""Client names no replica is bound to are refused unless the set opens them (openClients).

The deduplication table is replicated state with a row per client name: with unbound names
allowed, a faulty primary could order requests under made-up names and grow every correct
replica's table (and checkpoints) without bound.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from pot import errors
from pot.validator import auth, localnet, pbft, simulating
from pot.validator import messages as m
from pot.validator.actions import Send
from pot.validator.rejections import Rejection
from tests.validator import pbft_kit

CLOSED = pbft.Config(n=4, f=1)


def _replica(rid: int, cfg: pbft.Config = CLOSED) -> pbft.Replica:
    crypto = simulating.SimCrypto(rid, pbft_kit.SECRETS, random.Random(rid))
    return pbft.Replica(config=cfg, replica_id=rid, app=simulating.ChainApp(), crypto=crypto)


def _made_up(k: int) -> m.Request:
    return m.Request(client=f"made-up-{k}", ts=1, op=b"x")


def test_closed_by_default_refuses_an_unbound_client_at_entry() -> None:
    assert CLOSED.open_clients is False
    rep = _replica(1)
    assert rep.submit(_made_up(0)) == []
    assert rep.on_message(_made_up(1), 2) == []
    assert rep.rejected[Rejection.UNKNOWN_CLIENT] == 2
    assert not rep.pending and not rep.queue
    # A replica's own (signed) request still gets in.
    own = pbft.signed(m.Request(client=pbft.client_name(1), ts=1, op=b"x"), rep.crypto)
    assert any(isinstance(a, Send) and a.msg == own for a in rep.submit(own))


def test_a_pre_prepare_under_made_up_names_is_refused_and_the_dedup_table_does_not_grow() -> None:
    backup = _replica(1)
    before = dict(backup.dedup)
    batch = tuple(_made_up(k) for k in range(50))
    pp = m.pre_prepare(view=0, seq=1, nonce=b"n1", batch=batch, replica=0)
    assert backup.on_message(pp, 0) == []  # no PREPARE
    assert backup.rejected[Rejection.UNKNOWN_CLIENT] == 1
    assert backup.log.get(1) is None and not backup.pending
    # Its primary is faulty: the rest of the view is refused unchecked, like a forged request.
    own = pbft.signed(m.Request(client=pbft.client_name(0), ts=1, op=b"y"), backup.crypto)
    pp2 = m.pre_prepare(view=0, seq=2, nonce=b"n2", batch=(own,), replica=0)
    backup.on_message(pp2, 0)
    assert backup.rejected[Rejection.FORGED_REQUEST] == 1
    assert backup.dedup == before


def test_closed_set_executes_nothing_under_made_up_names() -> None:
    net = pbft_kit.Net(CLOSED)
    batch = tuple(_made_up(k) for k in range(20))
    pp = m.pre_prepare(view=0, seq=1, nonce=b"n", batch=batch, replica=0)
    for dst in (1, 2, 3):  # a faulty primary sends it to every backup
        net.send(0, dst, pp)
    net.pump()
    for rep in net.reps[1:]:
        assert rep.last_exec == 0 and rep.dedup == {}
        assert rep.rejected[Rejection.UNKNOWN_CLIENT] == 1


def test_open_clients_orders_them_as_before() -> None:
    net = pbft_kit.Net(pbft.Config(n=4, f=1, open_clients=True))
    net.perform(0, net.reps[0].submit(m.Request(client="c", ts=1, op=b"x")))
    net.pump()
    for rep in net.reps:
        assert rep.last_exec == 1 and "c" in rep.dedup
        assert not rep.rejected[Rejection.UNKNOWN_CLIENT]


def test_peers_json_open_clients(tmp_path: Path) -> None:
    path, _ = localnet.write_peers(tmp_path, 4, tuning={"checkpointInterval": 16})
    assert auth.load_peers(path).config().open_clients is False
    doc = json.loads(path.read_text())
    doc["pbft"]["openClients"] = True
    assert auth.parse_peers(doc).config().open_clients is True
    doc["pbft"]["openClients"] = 2
    with pytest.raises(errors.ConfigError, match=r"pbft\.openClients"):
        auth.parse_peers(doc, "p.json")
