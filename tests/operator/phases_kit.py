"""Shared inputs of the pure phase-machine tests (test_phases*.py)."""

from __future__ import annotations

import datetime
from typing import Any

from pot.operator import checks, gang, phases

T0 = datetime.datetime(2026, 1, 1, 0, 1, tzinfo=datetime.UTC)  # task created at 00:00
READY = checks.VsetView("vset", "Ready", True)
KEYS = frozenset({"miner-0.key", "miner-1.key"})


def world(task: dict[str, Any], nodes: list[gang.NodeInfo], **kw: Any) -> phases.World:
    """What ``phases.plan`` sees: the task at T0 with a Ready set, keys and ``nodes``."""
    base: dict[str, Any] = {
        "task": task,
        "now": T0,
        "vset": READY,
        "miner_keys": KEYS,
        "nodes": nodes,
    }
    base.update(kw)
    return phases.World(**base)
