"""Pure scheduling: which node a pod fits on, and why none does.

Mirrors the kube-scheduler filters this project depends on (NodeUnschedulable,
TaintToleration, NodeAffinity incl. nodeSelector, NodeResourcesFit with
extended resources such as `nvidia.com/gpu`) and words failures the way the
real scheduler does ("0/2 nodes are available: 2 Insufficient
nvidia.com/gpu."), because operators and humans grep for those messages.
Scoring is LeastAllocated (spread over rigs), ties broken by node name so
decisions are reproducible in tests.

No I/O: the controller manager feeds it Node and Pod dicts from its caches.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pot import quantities

Obj = Mapping[str, Any]

#: Taints the node lifecycle adds for nodes that are not Ready.
NOT_READY_TAINT = "node.kubernetes.io/not-ready"
UNREACHABLE_TAINT = "node.kubernetes.io/unreachable"
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one pod: a node, or the FailedScheduling message."""

    node: str | None
    message: str


def _container_requests(container: Obj) -> dict[str, int]:
    resources = container.get("resources") or {}
    # The API server defaults requests to limits when only limits are given
    # (that is how `nvidia.com/gpu: 1` under limits is requested).
    merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    return {k: quantities.amount(k, v) for k, v in merged.items()}


def _add(into: dict[str, int], more: Mapping[str, int]) -> None:
    for key, value in more.items():
        into[key] = into.get(key, 0) + value


def pod_requests(pod: Obj) -> dict[str, int]:
    """Effective requests: regular containers plus sidecars, or the largest init.

    As in Kubernetes: init containers run one at a time (so only the largest
    counts) while native sidecars (init containers with restartPolicy Always)
    keep running next to everything started after them.
    """
    spec = pod.get("spec") or {}
    total: dict[str, int] = {}
    sidecars: dict[str, int] = {}
    peak: dict[str, int] = {}
    for init in spec.get("initContainers") or []:
        req = _container_requests(init)
        if init.get("restartPolicy") == "Always":
            _add(sidecars, req)
        else:
            for key, value in req.items():
                peak[key] = max(peak.get(key, 0), value + sidecars.get(key, 0))
    for container in spec.get("containers") or []:
        _add(total, _container_requests(container))
    _add(total, sidecars)
    for key, value in peak.items():
        total[key] = max(total.get(key, 0), value)
    return total


def is_active(pod: Obj) -> bool:
    """Whether a bound pod still holds its node's resources."""
    phase = (pod.get("status") or {}).get("phase")
    return phase not in {"Succeeded", "Failed"}


def tolerates(tolerations: Iterable[Obj], taint: Obj) -> bool:
    """Whether any toleration matches ``taint`` (key, operator, value, effect)."""
    for tol in tolerations:
        if tol.get("effect") and tol.get("effect") != taint.get("effect"):
            continue
        operator = tol.get("operator") or "Equal"
        key = tol.get("key")
        if not key:
            if operator == "Exists":
                return True
            continue
        if key != taint.get("key"):
            continue
        if operator == "Exists" or (tol.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _expression_matches(expr: Obj, values: Mapping[str, str]) -> bool:
    key, operator = expr.get("key", ""), expr.get("operator")
    wanted = expr.get("values") or []
    present = key in values
    if operator == "In":
        return present and values[key] in wanted
    if operator == "NotIn":
        return not present or values[key] not in wanted
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in {"Gt", "Lt"}:
        try:
            have, bound = int(values[key]), int(wanted[0])
        except (KeyError, IndexError, ValueError):
            return False
        return have > bound if operator == "Gt" else have < bound
    return False


def _term_matches(term: Obj, node: Obj) -> bool:
    meta = node.get("metadata") or {}
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not exprs and not fields:
        return False  # an empty term matches nothing, as in Kubernetes
    node_labels = meta.get("labels") or {}
    return all(_expression_matches(e, node_labels) for e in exprs) and all(
        _expression_matches(f, {"metadata.name": meta.get("name", "")}) for f in fields
    )


def matches_affinity(pod: Obj, node: Obj) -> bool:
    """nodeSelector and requiredDuringSchedulingIgnoredDuringExecution."""
    spec = pod.get("spec") or {}
    node_labels = (node.get("metadata") or {}).get("labels") or {}
    for key, value in (spec.get("nodeSelector") or {}).items():
        if node_labels.get(key) != value:
            return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms")
    if terms is None:
        return True
    return any(_term_matches(t, node) for t in terms)


def node_is_ready(node: Obj) -> bool:
    """The node's Ready condition is True."""
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def effective_taints(node: Obj) -> list[Obj]:
    """Spec taints plus the ones the node lifecycle implies (not-ready, unschedulable)."""
    spec = node.get("spec") or {}
    taints: list[Obj] = list(spec.get("taints") or [])
    keys = {t.get("key") for t in taints}
    if not node_is_ready(node) and NOT_READY_TAINT not in keys and UNREACHABLE_TAINT not in keys:
        taints.append({"key": NOT_READY_TAINT, "effect": "NoSchedule"})
    if spec.get("unschedulable") and UNSCHEDULABLE_TAINT not in keys:
        taints.append({"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"})
    return taints


def _taint_text(taint: Obj) -> str:
    return f"{{{taint.get('key')}: {taint.get('value', '')}}}"


def allocatable(node: Obj) -> dict[str, int]:
    """The node's allocatable resources in scheduler units."""
    alloc = (node.get("status") or {}).get("allocatable") or {}
    return {k: quantities.amount(k, v) for k, v in alloc.items()}


def usage(pods: Iterable[Obj]) -> dict[str, dict[str, int]]:
    """Requested resources (and a pod count) per node, over active bound pods."""
    used: dict[str, dict[str, int]] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if not node or not is_active(pod):
            continue
        into = used.setdefault(node, {})
        _add(into, pod_requests(pod))
        into["pods"] = into.get("pods", 0) + 1
    return used


def filter_node(pod: Obj, node: Obj, used: Mapping[str, int]) -> list[str]:
    """Reasons ``pod`` cannot go to ``node`` (empty when it fits)."""
    spec = pod.get("spec") or {}
    tolerations = spec.get("tolerations") or []
    for taint in effective_taints(node):
        if taint.get("effect") in {"NoSchedule", "NoExecute"} and not tolerates(tolerations, taint):
            if taint.get("key") == UNSCHEDULABLE_TAINT:
                return ["node(s) were unschedulable"]
            return [f"node(s) had untolerated taint {_taint_text(taint)}"]
    if not matches_affinity(pod, node):
        return ["node(s) didn't match Pod's node affinity/selector"]
    alloc = allocatable(node)
    reasons = []
    if used.get("pods", 0) + 1 > alloc.get("pods", 110):
        reasons.append("Too many pods")
    for resource, wanted in sorted(pod_requests(pod).items()):
        if wanted and used.get(resource, 0) + wanted > alloc.get(resource, 0):
            reasons.append(f"Insufficient {resource}")
    return reasons


def _score(pod: Obj, node: Obj, used: Mapping[str, int]) -> float:
    """LeastAllocated: the mean free fraction after placing the pod."""
    alloc = allocatable(node)
    wanted = pod_requests(pod)
    fractions = []
    for resource in ("cpu", "memory", "nvidia.com/gpu"):
        total = alloc.get(resource, 0)
        if total:
            fractions.append(1 - (used.get(resource, 0) + wanted.get(resource, 0)) / total)
    # Spread like the default topology spreading: fewer pods scores higher.
    fractions.append(1 - (used.get("pods", 0) + 1) / max(alloc.get("pods", 110), 1))
    return sum(fractions) / len(fractions)


def schedule(pod: Obj, nodes: Iterable[Obj], used: Mapping[str, Mapping[str, int]]) -> Decision:
    """Pick a node for ``pod`` or explain, in kube-scheduler's words, why none fits."""
    candidates: list[tuple[float, str]] = []
    reasons: Counter[str] = Counter()
    node_list = list(nodes)
    for node in node_list:
        name = (node.get("metadata") or {}).get("name", "")
        if (node.get("metadata") or {}).get("deletionTimestamp"):
            continue
        node_used = used.get(name, {})
        failed = filter_node(pod, node, node_used)
        if failed:
            reasons.update(failed)
        else:
            candidates.append((-_score(pod, node, node_used), name))
    if candidates:
        candidates.sort()
        return Decision(candidates[0][1], "")
    detail = ", ".join(f"{count} {reason}" for reason, count in sorted(reasons.items()))
    message = f"0/{len(node_list)} nodes are available"
    message += f": {detail}." if detail else "."
    if node_list:
        message += (
            f" preemption: 0/{len(node_list)} nodes are available: "
            f"{len(node_list)} Preemption is not helpful for scheduling."
        )
    return Decision(None, message)


def is_gated(pod: Obj) -> bool:
    """Whether the pod still carries schedulingGates."""
    return bool((pod.get("spec") or {}).get("schedulingGates"))


def wants_default_scheduler(pod: Obj) -> bool:
    """Unbound, not deleting, and addressed to the default scheduler."""
    spec = pod.get("spec") or {}
    meta = pod.get("metadata") or {}
    return (
        not spec.get("nodeName")
        and not meta.get("deletionTimestamp")
        and spec.get("schedulerName", "default-scheduler") == "default-scheduler"
        and is_active(pod)
    )
