"""PBFT core under the scenarios of issue 6, each run by the seeded simulator with its safety checker."""

from __future__ import annotations

import dataclasses

import pytest

from pot.validator import actions, pbft, simulating
from pot.validator import messages as m
from pot.validator.rejections import Rejection


def run(**kw: object) -> simulating.Result:
    result = simulating.simulate(simulating.Scenario(**kw))  # type: ignore[arg-type]
    assert result.safe, result.violations  # the checker runs in every test
    return result


@pytest.mark.parametrize("seed", range(3))
def test_all_correct_commits_everything(seed: int) -> None:
    r = run(seed=seed, drop=0.0, duplicate=0.0)
    assert r.live and r.executed == 30 and r.view_changes == 0


@pytest.mark.parametrize("crashed", [(3,), (0,)], ids=["backup", "primary"])
def test_n4_commits_with_one_replica_crashed(crashed: tuple[int, ...]) -> None:
    r = run(seed=5, crashed=crashed, crash_ms=0)
    assert r.live and r.executed == 30
    if crashed == (0,):
        assert r.view_changes > 0  # the primary's crash forces a view change


@pytest.mark.parametrize("seed", range(4))
def test_n4_equivocating_primary_view_change_same_log(seed: int) -> None:
    sim = simulating.Simulation(simulating.Scenario(seed=seed, byzantine=(0,)))
    r = sim.run()
    assert r.safe, r.violations
    assert r.live and r.view_changes > 0
    logs = {
        i: sim.apps[i].snapshot()
        for i in (1, 2, 3)
        if sim.replicas[i].last_exec == sim.replicas[1].last_exec
    }
    assert len(set(logs.values())) == 1
    assert sum(sim.replicas[i].rejected[Rejection.EQUIVOCATION] for i in (1, 2, 3)) >= 0


@pytest.mark.parametrize(
    "faults", [{"byzantine": (0, 4)}, {"crashed": (1,), "byzantine": (5,)}, {"crashed": (0, 1)}]
)
def test_n7_with_two_faulty(faults: dict[str, tuple[int, ...]]) -> None:
    r = run(n=7, f=2, seed=11, **faults)
    assert r.live


@pytest.mark.parametrize("seed", range(3))
def test_partitions_heal_and_progress_resumes(seed: int) -> None:
    r = run(seed=seed, partitions=4, drop=0.1)
    assert r.live and r.executed == 30


@pytest.mark.parametrize("seed", range(3))
def test_replica_restarted_from_disk_catches_up(seed: int) -> None:
    sim = simulating.Simulation(simulating.Scenario(seed=seed, restarted=(2,), requests=60))
    r = sim.run()
    assert r.safe and r.live
    rep = sim.replicas[2]
    assert rep.stats["recovered_batches"] >= 0
    top = max(x.last_exec for x in sim.replicas)
    assert (
        rep.last_exec >= top - sim.cfg.checkpoint_interval
    )  # caught up (state transfer or replay)


def test_broken_variant_is_caught() -> None:
    """Quorums of 2f instead of 2f+1: the checker must find a violation (it can fail)."""
    caught = 0
    for seed in range(60):
        sc = simulating.random_scenario(n=4, faulty=1, seed=seed, broken=True)
        sc = dataclasses.replace(sc, byzantine=(seed % 4,), crashed=(), restarted=())
        caught += not simulating.simulate(sc).safe
    assert caught > 0


def test_forged_requests_are_caught_only_when_signatures_are_not_checked() -> None:
    """Byzantine primaries put requests under correct replicas' names in their PRE-PREPAREs.
    With request signatures checked, none executes anywhere; with any signature accepted (the
    broken variant), the checker names the replica that executed one."""
    forged = caught = 0
    for seed in range(40):
        sc = simulating.random_scenario(n=4, faulty=1, seed=seed)
        sc = dataclasses.replace(sc, byzantine=(0,), crashed=(), restarted=())
        sim = simulating.Simulation(sc)
        r = sim.run()
        assert r.safe and r.live, (seed, r.violations)
        forged += len(sim.forged)
        broken = simulating.simulate(dataclasses.replace(sc, forgeable=True))
        caught += any("forged under r" in v for v in broken.violations)
    assert forged > 0 and caught > 0


def test_simulate_cli_exit_codes() -> None:
    from typer.testing import CliRunner

    from pot.validator.cli import app

    ok = CliRunner().invoke(app, ["simulate", "--n", "4", "--faulty", "1", "--runs", "20"])
    assert ok.exit_code == 0, ok.output
    assert "violations=0" in ok.output
    bad = CliRunner().invoke(
        app, ["simulate", "--n", "4", "--faulty", "1", "--runs", "80", "--broken"]
    )
    assert bad.exit_code == 1, bad.output
    forged = CliRunner().invoke(
        app, ["simulate", "--n", "4", "--faulty", "1", "--runs", "80", "--forgeable"]
    )
    assert forged.exit_code == 1, forged.output


@pytest.mark.slow
def test_thousands_of_seeded_runs_have_no_violation() -> None:
    bad = []
    for n, faulty, runs in ((4, 1, 1200), (7, 2, 150)):
        for seed in range(runs):
            r = simulating.simulate(simulating.random_scenario(n=n, faulty=faulty, seed=seed))
            if not r.safe or not r.live:
                bad.append((n, seed, r.violations, r.live))
    assert not bad


# ------------------------------------------------------------------ unit level


class _App:
    def __init__(self) -> None:
        self.done: list[bytes] = []

    def execute(self, request: m.Request, ctx: pbft.ExecContext) -> bytes:
        self.done.append(request.op)
        return b""

    def snapshot(self) -> bytes:
        return b"|".join(self.done)

    def restore(self, data: bytes) -> None:
        self.done = data.split(b"|") if data else []


def _replica(rid: int = 1) -> pbft.Replica:
    import random

    secrets = [bytes([i]) * 32 for i in range(4)]
    crypto = simulating.SimCrypto(rid, secrets, random.Random(0))
    return pbft.Replica(
        config=pbft.Config(n=4, f=1, open_clients=True), replica_id=rid, app=_App(), crypto=crypto
    )


def test_hostile_messages_are_counted_never_raised() -> None:
    r = _replica(1)
    req = m.Request(client="c", ts=1, op=b"x")
    pp = m.PrePrepare(
        view=0, seq=1, digest=m.batch_digest(b"n", (req,)), nonce=b"n", batch=(req,), replica=0
    )
    cases = [
        (dataclasses.replace(pp, digest=b"\0" * 32), 0, Rejection.BAD_DIGEST),
        (dataclasses.replace(pp, replica=2), 2, Rejection.NOT_PRIMARY),
        (pp, 2, Rejection.SPOOFED_SENDER),
        (dataclasses.replace(pp, view=3), 0, Rejection.WRONG_VIEW),
        (dataclasses.replace(pp, seq=10_000), 0, Rejection.OUTSIDE_WINDOW),
        (m.Prepare(view=0, seq=1, digest=pp.digest, replica=0), 0, Rejection.NOT_PRIMARY),
        (m.Checkpoint(seq=0, digest=b"\0" * 32, replica=2), 2, Rejection.STALE),
        (m.Status(view=0, normal=True, h=0, last_exec=0, replica=9), 9, Rejection.UNKNOWN_PEER),
    ]
    for msg, sender, reason in cases:
        before = r.rejected[reason]
        r.on_message(msg, sender)
        assert r.rejected[reason] == before + 1, reason
    r.on_message(pp, 0)
    other = dataclasses.replace(pp, nonce=b"z", digest=m.batch_digest(b"z", (req,)))
    r.on_message(other, 0)
    assert r.rejected[Rejection.EQUIVOCATION] == 1
    r.on_message(pp, 0)
    assert r.rejected[Rejection.DUPLICATE] >= 1
    # A forged (unsigned / mis-signed) VIEW-CHANGE is refused.
    vc = m.ViewChange(
        view=1,
        h=0,
        checkpoints=((0, b"\1" * 32),),
        prepared=(),
        preprepared=(),
        batches=(),
        replica=2,
        signature=b"bad",
    )
    r.on_message(vc, 2)
    assert r.rejected[Rejection.BAD_SIGNATURE] == 1


def test_new_primary_never_proposes_a_sequence_number_twice() -> None:
    """Regression (found by the simulator): installing a NEW-VIEW made a checkpoint stable,
    which let the new primary propose above its stale next_seq, and then reset next_seq to the
    NEW-VIEW's top and propose the same sequence numbers again: it equivocated with itself."""
    import random

    secrets = [bytes([i + 1]) * 32 for i in range(4)]
    cfg = pbft.Config(
        n=4, f=1, open_clients=True, checkpoint_interval=4, view_change_timeout_ms=100
    )
    rep = pbft.Replica(
        config=cfg,
        replica_id=1,
        app=_App(),
        crypto=simulating.SimCrypto(1, secrets, random.Random(1)),
    )

    def batch(seq: int) -> m.PrePrepare:
        req = m.Request(client="c", ts=seq, op=b"op%d" % seq)
        return m.pre_prepare(view=0, seq=seq, nonce=b"n", batch=(req,), replica=0)

    for seq in range(1, 9):  # view 0 commits 1..8; checkpoint 4 becomes stable, 8 does not
        pp = batch(seq)
        rep.on_message(pp, 0)
        for r in (2, 3):
            rep.on_message(m.Prepare(view=0, seq=seq, digest=pp.digest, replica=r), r)
        for r in (0, 2):
            rep.on_message(m.Commit(view=0, seq=seq, digest=pp.digest, replica=r), r)
        if seq == 4:
            for r in (0, 2):
                rep.on_message(m.Checkpoint(seq=4, digest=rep.own_cks[4][0], replica=r), r)
    assert rep.last_exec == 8 and rep.h == 4
    for seq in (9, 10, 11):  # pre-prepared only: next_seq is 11
        rep.on_message(batch(seq), 0)
    for ts in range(100, 105):  # requests waiting in the queue for the next primary
        rep.submit(m.Request(client="w", ts=ts, op=b"w"))
    checkpoints = ((4, rep.own_cks[4][0]), (8, rep.own_cks[8][0]))
    out = rep.on_tick(cfg.view_change_timeout_ms + 1)  # the primary is suspected: view 1
    assert rep.view == 1 and rep.view_changing
    for r in (2, 3):
        vc = m.ViewChange(
            view=1, h=4, checkpoints=checkpoints, prepared=(), preprepared=(), batches=(), replica=r
        )
        vc = dataclasses.replace(
            vc,
            signature=simulating.SimCrypto(r, secrets, random.Random(r)).sign(m.signing_bytes(vc)),
        )
        out += rep.on_message(vc, r)
    assert not rep.view_changing and rep.h == 8  # installed: checkpoint 8 made stable
    seqs = [
        a.msg.seq for a in out if isinstance(a, actions.Send) and isinstance(a.msg, m.PrePrepare)
    ]
    assert seqs and seqs == sorted(set(seqs)) and seqs[0] == 9, seqs
