"""PodDisruptionBudgets as the eviction sub-resource enforces them.

A real cluster splits this in two: the disruption controller keeps each
PDB's status (expected pods, desired and current healthy, disruptions
allowed), and ``POST pods/<name>/eviction`` refuses with 429 TooManyRequests
when the pod's budget allows no disruption. Here the eviction computes the
same numbers from the store at the moment it is asked, so no controller or
stale status is needed:

* a pod that is Pending, Succeeded, Failed or already being deleted ignores
  budgets; a pod matched by more than one budget cannot be evicted (500);
* ``minAvailable`` as a number counts the budget's own pods; a percentage or
  ``maxUnavailable`` needs the pods' controllers' replicas (a ReplicaSet of a
  Deployment counts as the Deployment): a pod without a controller leaves
  the budget at zero disruptions, so nothing is evicted, as on a real cluster;
* healthy = Ready and not being deleted; an unready pod may go while the
  budget is met (``unhealthyPodEvictionPolicy`` IfHealthyBudget, or always
  with AlwaysAllow).
"""

from __future__ import annotations

import math
from typing import Any

from pot.localcluster import statuses
from pot.localcluster.storage import Obj, Store


def selects(selector: Any, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels, matchExpressions) against labels; null matches nothing."""
    if not isinstance(selector, dict):
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e.get("key", ""), e.get("operator", ""), e.get("values") or []
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def _ready(pod: Obj) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def _labels(obj: Obj) -> dict[str, str]:
    return (obj.get("metadata") or {}).get("labels") or {}


def _scaled(value: Any, total: int) -> int:
    """An IntOrString against ``total`` (percentages round up)."""
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(int(value[:-1]) * total / 100)
    return int(value)


def _controller_replicas(store: Store, pod: Obj, seen: set[str]) -> int | None:
    """Replicas of the pod's controller (None: it has none that scales)."""
    ref = next(
        (
            r
            for r in (pod.get("metadata") or {}).get("ownerReferences") or []
            if r.get("controller")
        ),
        None,
    )
    key = store.by_uid(ref.get("uid", "")) if ref else None
    owner = store.get(key) if key else None
    if owner is None:
        return None
    if key is not None and key[:2] == ("apps", "replicasets"):
        dep = next(
            (r for r in owner["metadata"].get("ownerReferences") or [] if r.get("controller")),
            None,
        )
        dkey = store.by_uid(dep.get("uid", "")) if dep and dep.get("kind") == "Deployment" else None
        if dkey is not None and store.get(dkey) is not None:
            owner = store.get(dkey) or owner
    uid = owner["metadata"].get("uid", "")
    replicas = (owner.get("spec") or {}).get("replicas")
    if not isinstance(replicas, int):
        return None
    if uid in seen:
        return 0
    seen.add(uid)
    return replicas


def check_eviction(store: Store, pod: Obj) -> None:
    """Raise 429 (or 500) when evicting ``pod`` would break its PodDisruptionBudget."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if meta.get("deletionTimestamp") or status.get("phase") in ("Pending", "Succeeded", "Failed"):
        return
    ns = meta.get("namespace", "")
    budgets = [
        b
        for b in store.objects("policy", "poddisruptionbudgets", ns)
        if selects((b.get("spec") or {}).get("selector"), _labels(pod))
    ]
    if not budgets:
        return
    if len(budgets) > 1:
        raise statuses.ApiError(
            500,
            "InternalError",
            "This pod has more than one PodDisruptionBudget, which the eviction subresource "
            "does not support.",
        )
    pdb = budgets[0]
    spec, name = pdb.get("spec") or {}, pdb["metadata"].get("name", "")
    pods = [
        p
        for p in store.objects("", "pods", ns)
        if selects(spec.get("selector"), _labels(p))
        and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]
    healthy = sum(1 for p in pods if _ready(p) and not p["metadata"].get("deletionTimestamp"))
    desired: int | None
    if isinstance(spec.get("minAvailable"), int):
        desired = spec["minAvailable"]
    else:
        seen: set[str] = set()
        counts = [_controller_replicas(store, p, seen) for p in pods]
        if any(c is None for c in counts):
            desired = None  # "found no controllers": the real budget allows nothing
        else:
            expected = sum(c or 0 for c in counts)
            if spec.get("minAvailable") is not None:
                desired = _scaled(spec["minAvailable"], expected)
            else:
                desired = max(expected - _scaled(spec.get("maxUnavailable", 0), expected), 0)
    if not _ready(pod):
        if spec.get("unhealthyPodEvictionPolicy") == "AlwaysAllow":
            return
        if desired is not None and healthy >= desired > 0:
            return
    if desired is not None and healthy - desired > 0:
        return
    raise statuses.ApiError(
        429,
        "TooManyRequests",
        "Cannot evict pod as it would violate the pod's disruption budget.",
        causes=[
            statuses.Cause(
                "",
                "DisruptionBudget",
                f"The disruption budget {name} needs {desired if desired is not None else 0} "
                f"healthy pods and has {healthy} currently",
            )
        ],
    )
