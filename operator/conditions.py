"""Status conditions following the Kubernetes API conventions.

Kubeflow #1711 (unclear condition transitions) is the failure we avoid: every
condition has a fixed type, a CamelCase reason, a human message, an
``observedGeneration`` and a ``lastTransitionTime`` that moves only when the
*status* changes (a new reason or message under the same status keeps the
time, as metav1.Condition requires). Pure: the caller passes the clock.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any, Literal

Status = Literal["True", "False", "Unknown"]

# TrainingTask condition types.
READY = "Ready"
REGISTERED = "Registered"
MINERS_STAKED = "MinersStaked"
STAKE_LOCKED = "StakeLocked"
GANG_SCHEDULED = "GangScheduled"
TRAINING = "Training"
VERIFIED = "Verified"
SETTLED = "Settled"
FAILED = "Failed"
# ValidatorSet condition types (READY shared).
QUORUM = "QuorumAvailable"
KEYS_PRESENT = "KeysSecretPresent"


def timestamp(now: datetime.datetime) -> str:
    """RFC 3339 in UTC with second precision, as the API server writes times."""
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime.datetime | None:
    """The inverse of ``timestamp`` (None for missing or malformed)."""
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def find(conditions: Sequence[Mapping[str, Any]] | None, ctype: str) -> Mapping[str, Any] | None:
    """The condition of type ``ctype``, if any."""
    for cond in conditions or ():
        if cond.get("type") == ctype:
            return cond
    return None


def is_true(conditions: Sequence[Mapping[str, Any]] | None, ctype: str) -> bool:
    """Whether condition ``ctype`` is present with status True."""
    cond = find(conditions, ctype)
    return bool(cond and cond.get("status") == "True")


def put(
    conditions: Sequence[Mapping[str, Any]] | None,
    ctype: str,
    status: Status,
    reason: str,
    message: str,
    *,
    generation: int,
    now: datetime.datetime,
) -> list[dict[str, Any]]:
    """A new list with ``ctype`` set; order kept, new types appended."""
    out: list[dict[str, Any]] = []
    found = False
    for cond in conditions or ():
        if cond.get("type") != ctype:
            out.append(dict(cond))
            continue
        found = True
        moved = cond.get("status") != status or not cond.get("lastTransitionTime")
        out.append(
            {
                "type": ctype,
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": timestamp(now) if moved else cond["lastTransitionTime"],
                "observedGeneration": generation,
            }
        )
    if not found:
        out.append(
            {
                "type": ctype,
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": timestamp(now),
                "observedGeneration": generation,
            }
        )
    return out
