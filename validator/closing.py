"""What a task keeps once its allocation is computed: a summary, not its segments.

A task's per-segment records (CIDs, digest, verdicts, metrics: about a kilobyte each)
are needed until the allocation: for chaining, audits and the reward computation. After
it, nothing reads them but ``GET /v1/tasks``, whose per-miner counts and progress are
computed once here and kept. Without this, every closed task's records stayed in the
replicated state for good, and each checkpoint's snapshot, and each state transfer, grew
with every segment ever committed.

Closing runs inside ``App.execute``, so every replica closes a task at the same point of the
order and their snapshots stay byte-identical. A state from before closing existed (closed
tasks with their segments) is read as it is: ``summary`` computes the same view from it.
"""

from __future__ import annotations

from typing import Any


def summary(t: dict[str, Any]) -> dict[str, Any]:
    """``progress`` and ``miners`` of ``GET /v1/tasks`` for task state ``t``."""
    if "summary" in t:
        summarized: dict[str, Any] = t["summary"]
        return summarized
    segs = list(t["segments"].values())
    miners: dict[str, dict[str, int]] = {}
    for s in sorted(segs, key=lambda s: (s["miner"], s["index"])):
        mm = miners.setdefault(
            s["miner"], {"segments": 0, "verified": 0, "rejected": 0, "samples": 0}
        )
        mm["segments"] += 1
        mm["verified"] += s["decided"] is True
        mm["rejected"] += s["decided"] is False
        mm["samples"] += s["samples"] if s["decided"] else 0
    return {
        "progress": {
            "step": max((s["endStep"] for s in segs), default=0),
            "totalSteps": t["info"]["steps"],
            "segmentsCommitted": len(segs),
            "segmentsVerified": sum(s["decided"] is True for s in segs),
            "segmentsRejected": sum(s["decided"] is False for s in segs),
        },
        "miners": miners,
    }


def close(t: dict[str, Any]) -> None:
    """Replace task state ``t``'s segments by their summary (its allocation is computed)."""
    t["summary"] = summary(t)
    t["segments"] = {}
