"""Options that cannot work are refused before a command starts anything.

``pot demo --chain bogus`` used to bring the whole local cluster up (and then run the
in-process EVM as if ``evm`` had been asked for); ``pot pbft simulate --runs 0`` reported
a clean run of nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner, Result

from pot import cli, demo, errors
from pot.settlement import devchain

cli._register()


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli.app, list(args))


@pytest.fixture
def no_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**_: Any) -> None:
        raise AssertionError("the demo started")

    monkeypatch.setattr(demo, "run", refuse)


@pytest.mark.usefixtures("no_run")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--chain", "bogus"], "--chain 'bogus': expected auto, anvil or evm"),
        (["--timeout", "0"], "--timeout 0: must be more than 0 seconds"),
    ],
)
def test_demo_refuses_bad_options_before_starting(args: list[str], message: str) -> None:
    out = invoke("demo", *args)
    assert isinstance(out.exception, errors.ConfigError), out.output
    assert str(out.exception) == message


@pytest.mark.usefixtures("no_run")
def test_demo_anvil_without_anvil(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devchain, "anvil_path", lambda: None)
    out = invoke("demo", "--chain", "anvil")
    assert isinstance(out.exception, errors.ConfigError)
    assert "anvil is not installed" in str(out.exception)


def test_demo_failure_points_at_what_is_left(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    def fail(**_: Any) -> None:
        raise errors.ClusterError("boom")

    monkeypatch.setattr(demo, "run", fail)
    out = CliRunner().invoke(cli.app, ["demo", "--dir", str(tmp_path)])
    assert out.exit_code == 1
    # Without --keep the cluster is down: no kubectl to run against it.
    assert "describe tt" not in out.output and "rerun with --keep" in out.output
    out = CliRunner().invoke(cli.app, ["demo", "--dir", str(tmp_path), "--keep"])
    assert out.exit_code == 1 and "describe tt" in out.output


@pytest.mark.parametrize("runs", ["0", "-1"])
def test_pbft_simulate_needs_a_run(runs: str) -> None:
    out = invoke("pbft", "simulate", "--runs", runs)
    assert out.exit_code == 2
    assert "--runs" in out.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n", "3", "--faulty", "0"], "--n 3: need at least 4 replicas"),
        (["--n", "0"], "--n 0: need at least 4 replicas"),
        (["--n", "4", "--faulty", "2"], "--faulty 2: with --n 4 it must be from 0 to f = 1"),
        (["--n", "7", "--faulty", "-1"], "--faulty -1: with --n 7 it must be from 0 to f = 2"),
    ],
)
def test_pbft_simulate_names_the_bad_flag(args: list[str], message: str) -> None:
    out = invoke("pbft", "simulate", "--runs", "1", *args)
    assert out.exit_code == 2
    assert message in " ".join(out.output.replace("│", " ").split())
