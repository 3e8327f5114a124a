"""The simulator's large-request mode: the window cap (``window``) binds under its faults."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from typer.testing import CliRunner

from pot.validator import checkpointing, simulating, viewchange, viewchanging
from pot.validator import messages as m
from pot.validator.cli import app

BIG = m.MAX_OP_BYTES


def _bound(r: simulating.Result) -> bool:
    return bool(r.window_full or r.padding)


def test_large_runs_bind_the_cap_and_stay_safe_and_live() -> None:
    """A modest share of what ``pot pbft simulate --op-bytes 262144`` runs by the thousand:
    no violation, no stall, and the cap bound (padding, WINDOW_FULL) in some runs, or the mode
    would prove nothing."""
    bound = full = 0
    peak = 0.0
    for n, faulty, runs in ((4, 1, 12), (7, 2, 3)):
        for seed in range(runs):
            r = simulating.simulate(
                simulating.random_scenario(n=n, faulty=faulty, seed=seed, op_bytes=BIG)
            )
            assert r.safe and r.live, (n, seed, r.violations, r.executed)
            assert r.wrongful_window_full == 0, (n, seed)
            bound += _bound(r)
            full += r.window_full > 0
            peak = max(peak, r.window_peak)
    assert bound >= 3 and full >= 1
    assert peak > 0.95  # a primary filled its window to within a request of the limit


def test_large_mode_draws_from_the_seed_only() -> None:
    sc = simulating.random_scenario(n=4, faulty=1, seed=3, op_bytes=BIG)
    one, two = simulating.Simulation(sc), simulating.Simulation(sc)
    a, b = one.run(), two.run()
    assert (a.commits, a.executed, a.padding, a.window_full) == (
        b.commits,
        b.executed,
        b.padding,
        b.window_full,
    )
    assert one.checker.committed == two.checker.committed
    # The small mode draws nothing more: its scenarios (and seeds' schedules) are as before.
    small = simulating.random_scenario(n=4, faulty=1, seed=3)
    assert dataclasses.replace(sc, op_bytes=0, requests=30, bursts=0) == small


def test_broken_variants_are_still_caught_with_large_requests() -> None:
    """Quorums of 2f, and replicas that take any signature: the checker must still fail
    them when the window cap shapes the batches."""
    broken = forged = 0
    for seed in range(40):
        sc = simulating.random_scenario(n=4, faulty=1, seed=seed, broken=True, op_bytes=BIG)
        sc = dataclasses.replace(sc, byzantine=(seed % 4,), crashed=(), restarted=())
        broken += not simulating.simulate(sc).safe
        if broken and forged:
            break
        sc = simulating.random_scenario(n=4, faulty=1, seed=seed, forgeable=True, op_bytes=BIG)
        sc = dataclasses.replace(sc, byzantine=(0,), crashed=(), restarted=())
        forged += any("forged under r" in v for v in simulating.simulate(sc).violations)
    assert broken > 0 and forged > 0


def test_simulate_cli_op_bytes() -> None:
    ok = CliRunner().invoke(app, ["simulate", "--runs", "4", "--seed", "3", "--op-bytes", str(BIG)])
    assert ok.exit_code == 0, ok.output
    assert "violations=0" in ok.output and "window_capped_runs=" in ok.output
    assert "window_capped_runs=0" not in ok.output and "wrongful_window_full=0" in ok.output
    bad = CliRunner().invoke(app, ["simulate", "--runs", "1", "--op-bytes", str(BIG + 1)])
    assert bad.exit_code != 0 and "--op-bytes" in bad.output


def test_scenario_refuses_ops_replicas_would_refuse() -> None:
    with pytest.raises(ValueError, match="op_bytes"):
        simulating.Simulation(simulating.Scenario(op_bytes=BIG + 1))


class _QueueBeforeStable:
    """``viewchanging``'s ``checkpointing`` as before commit fd311cc: the new primary's queue
    already full when ``install`` makes the NEW-VIEW's checkpoint stable (which proposes), so
    it packs against a window without the NEW-VIEW's re-proposals and passes the limit."""

    def __getattr__(self, name: str) -> object:
        return getattr(checkpointing, name)

    @staticmethod
    def make_stable(rep: Any, seq: int, digest: bytes, out: list[Any]) -> None:
        nv = rep.last_nv
        bodies = viewchange.bodies(nv.view_changes)
        in_flight = {r.key for _, d in nv.chosen for r in bodies[d].requests}
        rep.queue = {k: r for k, r in rep.pending.items() if k not in in_flight}
        checkpointing.make_stable(rep, seq, digest, out)


def test_wrongful_window_full_catches_a_primary_that_undercounts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The counter can fail: with fd311cc's bug put back, n=4 seed 96 (where the bug was
    found) has correct backups in the primary's h refuse its batches, and the CLI exits 1.
    The same seed with the fix counts none."""
    sc = simulating.random_scenario(n=4, faulty=1, seed=96, op_bytes=BIG)
    assert simulating.simulate(sc).wrongful_window_full == 0
    monkeypatch.setattr(viewchanging, "checkpointing", _QueueBeforeStable())
    out = CliRunner().invoke(
        app, ["simulate", "--runs", "1", "--seed", "96", "--op-bytes", str(BIG)]
    )
    assert out.exit_code == 1, out.output
    assert "violations=0" in out.output and "first_wrongful_seed=96" in out.output
    assert "wrongful_window_full=0" not in out.output
