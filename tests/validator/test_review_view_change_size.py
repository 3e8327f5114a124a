"""A VIEW-CHANGE, and a NEW-VIEW of n of them, always fit the transport's frame (``window``)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from pot.validator import actions, pbft, simulating, transport, viewchange, window
from pot.validator import messages as m
from pot.validator.rejections import Rejection
from tests.validator import pbft_kit


def _fat(k: int, size: int) -> m.Request:
    """A request of ``size`` encoded bytes (``window.request_cost``), largest client and sig."""
    op = b"o" * (size - (1 + m.MAX_CLIENT_LEN + 12 + 1 + m.MAX_REQUEST_SIG))
    return m.Request(client=f"{k:064d}", ts=k, op=op, sig=b"s" * m.MAX_REQUEST_SIG)


@pytest.mark.parametrize(("n", "k"), [(4, 64), (100, 64), (4, 512)])
def test_worst_case_view_change_and_new_view_fit_the_frame(n: int, k: int) -> None:
    cfg = pbft.Config(n=n, f=(n - 1) // 3, checkpoint_interval=k)
    L, budget = cfg.window, window.limit(n, cfg.window)
    # PRE-PREPAREs adding up to the limit: one batch of largest requests per sequence number
    # while they last, then empty batches (largest nonce) for every other one.
    nonce = b"n" * m.MAX_NONCE
    batches, left = [], budget
    for s in range(1, L + 1):
        reqs: list[m.Request] = []
        room = left - window.BATCH_OVERHEAD
        while room >= window.MAX_REQUEST and len(reqs) < m.MAX_BATCH:
            reqs.append(_fat(s * 1000 + len(reqs), window.MAX_REQUEST))
            room -= window.MAX_REQUEST
        pp = m.pre_prepare(view=0, seq=s, nonce=nonce, batch=tuple(reqs), replica=0)
        left -= window.cost(pp)
        batches.append(m.Batch(nonce=nonce, requests=pp.batch))
    assert 0 <= left < window.MAX_REQUEST + window.BATCH_OVERHEAD  # the budget is spent
    entries = tuple(
        m.PEntry(seq=s, digest=bytes([s % 256]) * 32, view=2**62) for s in range(1, L + 1)
    )
    vc = m.ViewChange(
        view=2**63 - 1,
        h=0,
        checkpoints=tuple((s * k, b"c" * 32) for s in range(3)),
        prepared=entries,
        preprepared=entries,
        batches=tuple(batches),
        replica=n - 1,
        signature=b"g" * m.MAX_SIGNATURE,
    )
    vc_len = len(m.encode(vc))
    assert 4 + vc_len <= transport.MAX_FRAME
    nv = m.NewView(
        view=2**63 - 1,
        view_changes=(vc,) * n,
        checkpoint=(0, b"c" * 32),
        chosen=tuple((s, b"d" * 32) for s in range(1, L + 1)),
        replica=n - 1,
        signature=b"g" * m.MAX_SIGNATURE,
    )
    assert 4 + len(m.encode(nv)) <= transport.MAX_FRAME


def test_config_refuses_a_window_too_large_for_the_frame() -> None:
    with pytest.raises(ValueError, match="checkpoint_interval 4096 with n=100"):
        pbft.Config(n=100, f=33, checkpoint_interval=4096)


def test_a_backup_refuses_pre_prepares_past_the_limit() -> None:
    cfg = pbft.Config(n=4, f=1, open_clients=True)
    crypto = simulating.SimCrypto(1, pbft_kit.SECRETS, random.Random(1))
    backup = pbft.Replica(config=cfg, replica_id=1, app=simulating.ChainApp(), crypto=crypto)
    fat = [m.Request(client="c", ts=t, op=b"x" * m.MAX_OP_BYTES) for t in range(1, 101)]
    refused_at = None
    for seq in range(1, 101):  # a faulty primary: batches of 10 largest requests
        pp = m.pre_prepare(
            view=0,
            seq=seq,
            nonce=b"n%d" % seq,
            batch=tuple(r._replace(ts=r.ts + 100 * seq) for r in fat[:10]),
            replica=0,
        )
        backup.on_message(pp, 0)
        if backup.rejected[Rejection.WINDOW_FULL]:
            refused_at = seq
            break
    assert refused_at is not None and refused_at > 1
    assert backup.window_bytes <= backup.window_limit
    assert backup.log.get(refused_at) is None or backup.log[refused_at].pp is None


def test_a_correct_primary_stays_under_the_limit_and_everything_executes() -> None:
    cfg = pbft.Config(n=4, f=1, checkpoint_interval=4, view_change_timeout_ms=10**6)
    net = pbft_kit.Net(cfg)
    limit = net.reps[0].window_limit
    big = m.MAX_OP_BYTES
    per_window = limit // big
    total = 3 * per_window  # three windows' worth: only by checkpoints moving can all execute
    own = [
        pbft.signed(m.Request(client=pbft.client_name(0), ts=t, op=b"b" * big), net.reps[0].crypto)
        for t in range(1, total + 1)
    ]
    empty: list[int] = []
    perform = net.perform

    def watch(i: int, acts: list[actions.Action]) -> None:
        for a in acts:
            if isinstance(a, actions.Send) and isinstance(a.msg, m.PrePrepare):
                assert a.msg.batch or i == 0
                if not a.msg.batch:
                    empty.append(a.msg.seq)
        perform(i, acts)

    net.perform = watch  # type: ignore[method-assign]
    for req in own:
        net.perform(0, net.reps[0].submit(req))
        assert net.reps[0].window_bytes <= limit
    for _ in range(200):
        net.tick(50)
        assert all(r.window_bytes <= limit for r in net.reps)
        if all(r.stats["requests"] >= total for r in net.reps):
            break
    for r in net.reps:
        assert r.stats["requests"] == total
        assert not r.rejected[Rejection.WINDOW_FULL]
    assert empty  # the primary padded to reach checkpoints


def _signed_vc(
    net: pbft_kit.Net,
    i: int,
    view: int,
    p: list[m.PEntry],
    q: list[m.PEntry],
    batches: list[m.Batch],
) -> m.ViewChange:
    vc = m.ViewChange(
        view=view,
        h=0,
        checkpoints=((0, net.reps[i].stable_digest),),
        prepared=tuple(p),
        preprepared=tuple(q),
        batches=tuple(batches),
        replica=i,
    )
    return replace(vc, signature=net.reps[i].crypto.sign(m.signing_bytes(vc)))


def test_empty_batches_pass_a_window_that_a_new_view_filled_past_the_limit() -> None:
    """A NEW-VIEW may re-propose more than ``limit`` (batches prepared in two earlier views:
    the bound is per view). Every replica then counts more than the limit, the primary orders
    empty batches to reach the checkpoint, and the backups must take them: they refused them
    WINDOW_FULL, no checkpoint came, and each next view re-proposed the same set (a loop)."""
    cfg = pbft.Config(
        n=4, f=1, checkpoint_interval=4, open_clients=True, view_change_timeout_ms=10**6
    )
    net = pbft_kit.Net(cfg)
    limit = net.reps[0].window_limit
    per = (limit * 6 // 10) // window.MAX_REQUEST  # each batch about 0.6 of the limit
    one = m.Batch(nonce=b"a", requests=tuple(_fat(k, window.MAX_REQUEST) for k in range(per)))
    two = m.Batch(
        nonce=b"b", requests=tuple(_fat(1000 + k, window.MAX_REQUEST) for k in range(per))
    )
    d1, d2 = one.digest(), two.digest()
    view = 2  # seq 1 prepared in view 0, seq 2 in view 1; replica 0 pre-prepared both
    vcs = (
        _signed_vc(
            net,
            0,
            view,
            [],
            [m.PEntry(seq=1, digest=d1, view=0), m.PEntry(seq=2, digest=d2, view=1)],
            [one, two],
        ),
        _signed_vc(
            net,
            1,
            view,
            [m.PEntry(seq=1, digest=d1, view=0)],
            [m.PEntry(seq=1, digest=d1, view=0)],
            [one],
        ),
        _signed_vc(
            net,
            3,
            view,
            [m.PEntry(seq=2, digest=d2, view=1)],
            [m.PEntry(seq=2, digest=d2, view=1)],
            [two],
        ),
    )

    decision = viewchange.decide(vcs, f=1, window=cfg.window)
    assert decision is not None and decision.chosen == ((1, d1), (2, d2))
    primary = cfg.primary(view)
    nv = m.NewView(
        view=view,
        view_changes=vcs,
        checkpoint=decision.checkpoint,
        chosen=decision.chosen,
        replica=primary,
    )
    nv = replace(nv, signature=net.reps[primary].crypto.sign(m.signing_bytes(nv)))
    for i in range(4):
        net.perform(i, net.reps[i].on_message(nv, primary))
    assert all(r.view == view and r.window_bytes > limit for r in net.reps)
    req = m.Request(client="c", ts=10**6, op=b"after")
    net.perform(primary, net.reps[primary].submit(req))
    for _ in range(20):
        net.pump()
        net.tick(50)
        if all(r.executed(req.key) for r in net.reps):
            break
    assert all(r.executed(req.key) for r in net.reps), [r.last_exec for r in net.reps]
    assert not any(r.rejected[Rejection.WINDOW_FULL] for r in net.reps)
    assert all(r.view == view for r in net.reps)


def test_a_replica_restarted_in_a_view_counts_its_new_view_once() -> None:
    """A replica restarted in view v holds the NEW-VIEW's re-proposals from its log; installing
    that NEW-VIEW again (re-sent on its STATUS) must not count them twice, or it refuses the
    correct primary's PRE-PREPAREs WINDOW_FULL that its peers take."""
    cfg = pbft.Config(n=4, f=1, open_clients=True, view_change_timeout_ms=10**6)
    net = pbft_kit.Net(cfg)
    req = m.Request(client="c", ts=1, op=b"x" * 1000)
    net.perform(0, net.reps[0].submit(req))
    net.pump(drop=lambda s, d, msg: isinstance(msg, m.Commit))  # prepared in view 0 only
    for i in range(4):
        net.suspect(i)
    net.pump()
    assert all(r.view == 1 and not r.view_changing for r in net.reps)
    assert all(r.log[1].pp is not None and r.log[1].view == 1 for r in net.reps)
    once = net.reps[2].window_bytes
    assert once > 0
    net.restart(2)
    assert net.reps[2].view_changing
    for _ in range(5):
        net.tick(cfg.retransmit_ms)
        if not net.reps[2].view_changing:
            break
    assert not net.reps[2].view_changing
    assert net.reps[2].window_bytes == once


def test_a_new_primary_packs_after_counting_its_new_view() -> None:
    """The new primary made the NEW-VIEW's checkpoint stable before it took the re-proposals,
    and making it stable proposes: it packed its queue against a window without them, then
    they took it past the limit (the simulator's large mode, n=4 seed 96). The backups count
    them first and refused its batch WINDOW_FULL: a needless view change, and a VIEW-CHANGE
    past the bound that a NEW-VIEW of n of them must fit."""
    cfg = pbft.Config(
        n=4, f=1, checkpoint_interval=4, open_clients=True, view_change_timeout_ms=10**6
    )
    net = pbft_kit.Net(cfg)
    limit = net.reps[0].window_limit
    for ts in range(1, 5):  # seqs 1..4 execute everywhere, checkpoint 4 never stable
        net.perform(0, net.reps[0].submit(m.Request(client="c", ts=ts, op=b"small")))
        net.pump(drop=lambda s, d, msg: isinstance(msg, m.Checkpoint))
    assert all(r.last_exec == 4 and r.h == 0 for r in net.reps)
    ck4 = (4, net.reps[0].own_cks[4][0])
    per = (limit * 3 // 10) // window.MAX_REQUEST  # two re-proposals of 0.3 of the limit
    five = m.Batch(nonce=b"5", requests=tuple(_fat(k, window.MAX_REQUEST) for k in range(per)))
    six = m.Batch(nonce=b"6", requests=tuple(_fat(100 + k, window.MAX_REQUEST) for k in range(per)))
    prepared = [m.PEntry(seq=5, digest=five.digest(), view=0)]
    prepared.append(m.PEntry(seq=6, digest=six.digest(), view=0))
    net.suspect(1)  # replica 1, view 1's primary, queues large requests while it changes view
    net.q.clear()
    queued = [_fat(1000 + k, window.MAX_REQUEST) for k in range(limit // window.MAX_REQUEST)]
    for req in queued:
        net.perform(1, net.reps[1].submit(req))
    for i in (0, 2):
        vc = replace(
            _signed_vc(net, i, 1, prepared, prepared, [five, six]),
            checkpoints=((0, net.reps[i].own_cks[0][0]), ck4),
        )
        vc = replace(vc, signature=net.reps[i].crypto.sign(m.signing_bytes(vc)))
        net.perform(1, net.reps[1].on_message(vc, i))
    primary = net.reps[1]
    assert primary.view == 1 and not primary.view_changing and primary.h == 4
    assert primary.window_bytes <= limit
    net.pump()  # backups 0, 2, 3 take the NEW-VIEW (3 also needs 0 and 2's VIEW-CHANGEs)
    for _ in range(40):
        net.tick(50)
        if all(r.executed(q.key) for r in net.reps for q in queued):
            break
    assert not any(r.rejected[Rejection.WINDOW_FULL] for r in net.reps)
    assert all(r.view == 1 for r in net.reps)
    assert all(r.executed(q.key) for r in net.reps for q in queued)
