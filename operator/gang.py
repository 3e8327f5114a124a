"""All-or-nothing gang admission: release every gate together, or none.

Kubeflow #948 (partial gangs that start and hang) happens when some workers
of a job hold GPUs while the rest cannot be placed: rendezvous never completes
and the held GPUs starve every other job. Here every trainer pod is created
behind the ``pot.dev/gang`` scheduling gate; the gates come off only when the
operator's count says the *whole* gang fits the nodes' allocatable minus what
bound pods already use. The same arithmetic tells "can never fit" (Failed,
``Unschedulable``, with the numbers) from "does not fit yet" (gated,
``InsufficientCapacity``). Tasks carrying a Kueue or Volcano queue are left
to those schedulers entirely.

Pods are identical within a gang, so the count is exact: a node hosts
``min over resources of floor(free / request)`` of them, and the gang fits
when those add up to the gang size. Nodes are filtered as the scheduler does
(ready, schedulable, nodeSelector, NoSchedule/NoExecute taints tolerated).
Pure: the shell feeds nodes and per-node usage from its watches.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pot import errors, quantities
from pot.operator import names

Body = Mapping[str, Any]
RESOURCES = ("cpu", "memory", names.GPU)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """The parts of a Node that decide where trainer pods may go."""

    name: str
    allocatable: Mapping[str, int]
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Mapping[str, Any], ...] = ()
    ready: bool = True
    unschedulable: bool = False


@dataclass(frozen=True, slots=True)
class Fit:
    """How many of the gang's pods fit now and on an empty cluster, and why not."""

    wanted: int
    now: int
    ever: int
    message: str

    @property
    def fits_now(self) -> bool:
        """The whole gang fits the free capacity right now."""
        return self.now >= self.wanted

    @property
    def fits_ever(self) -> bool:
        """The whole gang fits the eligible nodes when nothing else runs."""
        return self.ever >= self.wanted


def node_info(node: Body) -> NodeInfo:
    """Parse a Node object."""
    meta, spec, status = (
        node.get("metadata") or {},
        node.get("spec") or {},
        node.get("status") or {},
    )
    alloc = {}
    for key, value in (status.get("allocatable") or {}).items():
        try:
            alloc[key] = quantities.amount(key, value)
        except errors.ConfigError:  # an odd extended resource never blocks the count
            alloc[key] = 0
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return NodeInfo(
        name=meta.get("name", ""),
        allocatable=alloc,
        labels=dict(meta.get("labels") or {}),
        taints=tuple(spec.get("taints") or ()),
        ready=ready,
        unschedulable=bool(spec.get("unschedulable")),
    )


def pod_requests(pod: Body) -> dict[str, int]:
    """Effective requests of a pod (requests, else limits; largest init container)."""
    spec = pod.get("spec") or {}

    def of(container: Mapping[str, Any]) -> dict[str, int]:
        res = container.get("resources") or {}
        merged = {**(res.get("limits") or {}), **(res.get("requests") or {})}
        out = {}
        for key, value in merged.items():
            try:
                out[key] = quantities.amount(key, value)
            except errors.ConfigError:
                out[key] = 0
        return out

    total: dict[str, int] = {}
    for container in spec.get("containers") or []:
        for key, value in of(container).items():
            total[key] = total.get(key, 0) + value
    for container in spec.get("initContainers") or []:
        for key, value in of(container).items():
            total[key] = max(total.get(key, 0), value)
    return total


def is_active(pod: Body) -> bool:
    """A bound pod that still holds its node's resources."""
    phase = (pod.get("status") or {}).get("phase")
    return bool((pod.get("spec") or {}).get("nodeName")) and phase not in ("Succeeded", "Failed")


def usage(pods: Iterable[Body]) -> dict[str, dict[str, int]]:
    """Requested resources and pod count per node over active bound pods."""
    used: dict[str, dict[str, int]] = {}
    for pod in pods:
        if not is_active(pod):
            continue
        into = used.setdefault(pod["spec"]["nodeName"], {})
        for key, value in pod_requests(pod).items():
            into[key] = into.get(key, 0) + value
        into["pods"] = into.get("pods", 0) + 1
    return used


def _tolerates(tolerations: Sequence[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    for tol in tolerations:
        if tol.get("effect") and tol.get("effect") != taint.get("effect"):
            continue
        if tol.get("operator") == "Exists":
            if not tol.get("key") or tol.get("key") == taint.get("key"):
                return True
        elif tol.get("key") == taint.get("key") and tol.get("value", "") == taint.get("value", ""):
            return True
    return False


def eligible(
    node: NodeInfo, selector: Mapping[str, str], tolerations: Sequence[Mapping[str, Any]]
) -> bool:
    """Labels match and every NoSchedule/NoExecute taint is tolerated."""
    if any(node.labels.get(k) != v for k, v in selector.items()):
        return False
    return all(
        _tolerates(tolerations, t)
        for t in node.taints
        if t.get("effect") in ("NoSchedule", "NoExecute")
    )


def _per_node(
    demand: Mapping[str, int], alloc: Mapping[str, int], used: Mapping[str, int]
) -> tuple[int, str]:
    """Pods of ``demand`` that fit, and the resource that limits them."""
    best, limit = alloc.get("pods", 110) - used.get("pods", 0), "pods"
    for key, want in demand.items():
        if want <= 0:
            continue
        free = alloc.get(key, 0) - used.get(key, 0)
        count = max(free, 0) // want
        if count < best:
            best, limit = count, key
    return max(best, 0), limit


def _amount(key: str, value: int) -> str:
    return quantities.render(key, value)


def fit(
    demand: Mapping[str, int],
    wanted: int,
    nodes: Sequence[NodeInfo],
    used: Mapping[str, Mapping[str, int]],
    *,
    selector: Mapping[str, str],
    tolerations: Sequence[Mapping[str, Any]],
) -> Fit:
    """Count the gang against the nodes, now and on an empty cluster."""
    candidates = [n for n in nodes if eligible(n, selector, tolerations)]
    want_text = ", ".join(f"{_amount(k, v)} {k}" for k, v in sorted(demand.items()) if v)
    ever = 0
    now = 0
    details = []
    for node in sorted(candidates, key=lambda n: n.name):
        cap_ever, _ = _per_node(demand, node.allocatable, {})
        ever += cap_ever
        if node.ready and not node.unschedulable:
            cap_now, limit_now = _per_node(demand, node.allocatable, used.get(node.name, {}))
        else:
            cap_now, limit_now = 0, "NotReady" if not node.ready else "cordoned"
        now += cap_now
        if cap_now == 0:
            if limit_now in ("NotReady", "cordoned"):
                details.append(f"{node.name}: {limit_now}")
            else:
                free = node.allocatable.get(limit_now, 0) - used.get(node.name, {}).get(
                    limit_now, 0
                )
                total = node.allocatable.get(limit_now, 0)
                details.append(
                    f"{node.name}: {_amount(limit_now, max(free, 0))} of {_amount(limit_now, total)} {limit_now} free"
                )
        else:
            details.append(f"{node.name}: room for {cap_now}")
    head = f"gang of {wanted} pods × ({want_text or 'nothing'})"
    if not candidates:
        why = f"{len(nodes)} nodes, none matches nodeSelector {dict(selector)} and tolerations"
        return Fit(wanted, 0, 0, f"{head}: {why}")
    if ever < wanted:
        caps = []
        for node in sorted(candidates, key=lambda n: n.name):
            cap, limit = _per_node(demand, node.allocatable, {})
            caps.append(
                f"{node.name}: {_amount(limit, node.allocatable.get(limit, 0))} {limit} allocatable, room for {cap}"
            )
        msg = f"{head} can never fit: {len(candidates)} eligible nodes hold at most {ever} ({'; '.join(caps)})"
        return Fit(wanted, now, ever, msg)
    if now < wanted:
        msg = f"{head}: only {now} fit now ({'; '.join(details)}); waiting for capacity"
        return Fit(wanted, now, ever, msg)
    return Fit(wanted, now, ever, f"{head} fits ({'; '.join(details)})")


def demand_of(spec: Mapping[str, Any]) -> dict[str, int]:
    """Per-pod requests of a task's trainer pods (as the builders set them)."""
    res = spec["resources"]
    out = {
        "cpu": quantities.amount("cpu", str(res.get("cpu", "1"))),
        "memory": quantities.amount("memory", str(res.get("memory", "2Gi"))),
    }
    gpus = int(res.get("gpusPerNode", 0) or 0)
    if gpus:
        out[names.GPU] = gpus
    return out
