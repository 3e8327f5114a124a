"""What a trainer pod's status says is wrong with it, in one line for the task's status.

Split from ``phases``, which shows these words when a gang member fails or cannot start:
the first container to fail with its exit code and termination message (an init
failure stops the rest), else the first that cannot start (ImagePullBackOff, ...) and
why, else the scheduler's PodScheduled=False message. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_STARTING = (None, "", "ContainerCreating", "PodInitializing")
_STATUSES = (("init container", "initContainerStatuses"), ("container", "containerStatuses"))


def message(status: Mapping[str, Any], phase: str) -> str:
    """The pod's trouble, or its own status message (may be empty)."""
    text = status.get("message") or status.get("reason") or ""
    failed = [
        (kind, cs, term)
        for kind, key in _STATUSES
        for cs in status.get(key) or []
        if (term := (cs.get("state") or {}).get("terminated")) and term.get("exitCode", 0) != 0
    ]
    for kind, cs, term in failed[:1]:  # the first to fail: an init failure stops the rest
        text = f"{kind} {cs.get('name')} exited with code {term.get('exitCode')}" + (
            f" ({term['reason']})" if term.get("reason") else ""
        )
        if term.get("message"):  # its termination message, e.g. the path it could not own
            text += f": {str(term['message']).strip()[:300]}"
    waits = [  # a container that cannot start (ImagePullBackOff, ...) says why
        (kind, cs, w)
        for kind, key in _STATUSES
        for cs in status.get(key) or []
        if (w := (cs.get("state") or {}).get("waiting") or {}).get("reason") not in _STARTING
    ]
    for kind, cs, w in waits[:1] if not text and phase == "Pending" else []:
        text = f"{kind} {cs.get('name')} waiting: {w['reason']}" + (
            f": {str(w['message']).strip()[:300]}" if w.get("message") else ""
        )
    if not text:
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                text = cond.get("message") or cond.get("reason") or ""
    return str(text)
