"""STATUS-driven retransmission (``pot.validator.retransmitting``): re-send to a peer that is
stuck, not to one whose batches are merely still in flight; a primary in the normal case never
re-multicasts its own clients' requests, a backup does."""

from __future__ import annotations

import random

from pot.validator import actions, pbft, simulating
from pot.validator import messages as m

CFG = pbft.Config(n=4, f=1, open_clients=True, checkpoint_interval=16, retransmit_ms=200)
SECRETS = [bytes([i + 1]) * 32 for i in range(4)]


def _replica(rid: int) -> pbft.Replica:
    crypto = simulating.SimCrypto(rid, SECRETS, random.Random(rid))
    return pbft.Replica(config=CFG, replica_id=rid, app=simulating.ChainApp(), crypto=crypto)


def _sent(outs: list[actions.Action], kind: type[m.Message]) -> list[m.Message]:
    return [a.msg for a in outs if isinstance(a, actions.Send) and isinstance(a.msg, kind)]


def _status(last_exec: int, replica: int = 2) -> m.Status:
    return m.Status(view=0, normal=True, h=0, last_exec=last_exec, replica=replica)


def test_a_moving_peer_is_sent_nothing_a_stuck_one_its_missing_batches() -> None:
    primary = _replica(0)
    for ts in range(1, 4):  # batch size 100: three proposals, one per submit
        primary.submit(m.Request(client="c", ts=ts, op=b"op%d" % ts))
    assert primary.next_seq == 3
    primary.now = 1_000  # all three entries are older than retransmit_ms

    assert _sent(primary.on_message(_status(0), 2), m.PrePrepare) == []  # first word from it
    assert _sent(primary.on_message(_status(1), 2), m.PrePrepare) == []  # it moved: in flight
    again = _sent(primary.on_message(_status(1), 2), m.PrePrepare)  # stuck at 1
    assert [pp.seq for pp in again if isinstance(pp, m.PrePrepare)] == [2, 3]

    # Entries younger than retransmit_ms are in flight even to a stuck peer.
    primary.submit(m.Request(client="c", ts=9, op=b"late"))
    again = _sent(primary.on_message(_status(1), 2), m.PrePrepare)
    assert [pp.seq for pp in again if isinstance(pp, m.PrePrepare)] == [2, 3]


def test_only_a_backup_re_multicasts_its_clients_requests() -> None:
    req = m.Request(client="c", ts=1, op=b"op")
    primary, backup = _replica(0), _replica(1)
    primary.submit(req)
    assert _sent(backup.submit(req), m.Request) == [req]  # forwarded to the primary
    for rep in (primary, backup):
        rep.on_tick(0)  # the first beacon
    assert _sent(primary.on_tick(500), m.Request) == []
    assert _sent(backup.on_tick(500), m.Request) == [req]  # PBFT §4.1: start everyone's timers


def test_an_idle_replica_beacons_a_quarter_as_often_and_speeds_up_with_work() -> None:
    backup = _replica(1)

    def beacons(times: range) -> list[int]:
        return [t for t in times if _sent(backup.on_tick(t), m.Status)]

    assert beacons(range(0, 1800, 50)) == [0, 800, 1600]  # idle: every 4 × 200 ms
    backup.submit(m.Request(client="c", ts=1, op=b"op"))  # pending until executed
    assert beacons(range(1850, 2300, 50)) == [1850, 2050, 2250]  # at once, then every 200 ms


def test_a_replica_left_behind_by_its_primary_suspects_it_without_a_request() -> None:
    """f+1 peers of its view executed past it, the primary does not re-send what it lacks
    (it left the view, say, after a restart), and it has no request of its own pending: after
    a view-change timeout it moves to the next view anyway, so f+1 such replicas bring a new
    primary. One peer's claim alone (maybe a faulty one's) moves nothing; progress resets it."""
    t = CFG.view_change_timeout_ms
    backup = _replica(3)
    backup.on_tick(0)
    backup.on_message(_status(2, replica=1), 1)  # one peer ahead: could be lying
    backup.on_tick(2 * t)
    assert not backup.view_changing
    backup.on_message(_status(2, replica=2), 2)  # f+1 peers ahead: a correct one is
    backup.on_tick(2 * t + t // 2)
    assert not backup.view_changing  # not a whole timeout yet
    out = backup.on_tick(3 * t + 1)
    assert backup.view_changing and backup.view == 1
    assert _sent(out, m.ViewChange)


def test_a_replica_that_executes_while_behind_is_not_suspicious() -> None:
    t = CFG.view_change_timeout_ms
    backup = _replica(3)
    backup.on_tick(0)
    for peer in (1, 2):
        backup.on_message(_status(5, replica=peer), peer)
    backup.last_exec = 1  # it moved on since it fell behind (batches in flight)
    backup.on_tick(2 * t)
    assert not backup.view_changing and backup.lag is None
