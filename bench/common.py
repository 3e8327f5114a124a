"""Shared output for benchmarks: a short table on stdout and JSON on disk."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
"""Where ``report`` writes NAME.json; ``POT_BENCH_RESULTS`` names another folder (the smoke
tests use it so a quick run never overwrites a real one)."""

MIN_SAMPLES_P99 = 100
"""Fewer latencies than this and a "p99" is only the slowest sample: reported as None."""


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of ``values``, or None when there are too
    few samples for it to be more than the maximum (p99 needs 100)."""
    if not values or (q > 0.5 and len(values) < round(1 / (1 - q))):
        return None
    s = sorted(values)
    return s[max(0, math.ceil(q * len(s)) - 1)]


def _commit() -> str | None:
    """The git commit the bench ran from (``+dirty`` with uncommitted changes), or None."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def machine() -> dict[str, Any]:
    """What the numbers were measured on, and from which code."""
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        # On a shared machine the other load moves every absolute number: keep it beside them.
        "loadavg_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "commit": _commit(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table (None reads "n/a")."""
    cells = [[str(h) for h in headers]] + [
        [f"{c:.4g}" if isinstance(c, float) else "n/a" if c is None else str(c) for c in r]
        for r in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report(
    name: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], **extra: Any
) -> dict[str, Any]:
    """Print the table, write NAME.json (in bench/results), return the JSON object."""
    print(table(headers, rows))
    doc = {
        "benchmark": name,
        "machine": machine(),
        "columns": list(headers),
        "rows": [list(r) for r in rows],
        **extra,
    }
    results = Path(os.environ.get("POT_BENCH_RESULTS") or RESULTS)
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{name}.json"
    # allow_nan=False: NaN and Infinity are not JSON; a ratio that produced one is a bench bug.
    path.write_text(json.dumps(doc, indent=2, default=str, allow_nan=False) + "\n")
    print(f"(written to {path})")
    return doc
