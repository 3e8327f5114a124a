"""POT_STAKE_CHECK=0 (test stacks without a chain) is said out loud: the operator logs a
WARNING at start (the chart cannot set it: tests/test_chart.py)."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import kopf
import pytest

from pot.operator import handlers


async def test_the_operator_warns_at_start_when_the_check_is_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Any
) -> None:
    for var in ("KUBERNETES_SERVICE_HOST", "POT_OPERATOR_KEY_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))  # stops start-up after config

    async def start(check: str) -> list[str]:
        monkeypatch.setenv("POT_STAKE_CHECK", check)
        caplog.clear()
        with caplog.at_level(logging.WARNING, "pot.operator"), contextlib.suppress(Exception):
            await handlers.startup(
                settings=kopf.OperatorSettings(), memo=kopf.Memo(), logger=logging.getLogger()
            )
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    off = [m for m in await start("0") if "POT_STAKE_CHECK=0" in m]
    assert off and "never in production" in off[0]
    assert not [m for m in await start("1") if "POT_STAKE_CHECK" in m]
