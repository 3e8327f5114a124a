"""The simulator's large-request mode: the window cap (``window``) binds under its faults."""

from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

from pot.validator import messages as m
from pot.validator import simulating
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
    assert "window_capped_runs=0" not in ok.output
    bad = CliRunner().invoke(app, ["simulate", "--runs", "1", "--op-bytes", str(BIG + 1)])
    assert bad.exit_code != 0 and "--op-bytes" in bad.output


def test_scenario_refuses_ops_replicas_would_refuse() -> None:
    with pytest.raises(ValueError, match="op_bytes"):
        simulating.Simulation(simulating.Scenario(op_bytes=BIG + 1))
