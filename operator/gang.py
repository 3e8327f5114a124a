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

Free means allocatable minus what bound pods use *and* minus what is already
promised: the released pods of other gangs that the scheduler has not bound
yet (and pods being created released right now) have no node, so the usage
of bound pods cannot show them. Each of these ``Claim``s is placed first fit,
in node-name order, on the nodes this gang could use, where it may go and
has room, and the room it takes is held there. That is conservative: a claim
that would land elsewhere still holds room here until it binds, which only
delays a gang by the seconds binding takes, whereas counting it nowhere let
two gangs be released onto the same GPUs. Pure: the shell feeds nodes,
per-node usage and the claims from its watches.
"""

from __future__ import annotations

import json
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
class Claim:
    """Released pods (``count`` alike) that the scheduler has not bound yet: they
    will take room on some node, so a count must not hand that room out again."""

    requests: Mapping[str, int]
    selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    count: int = 1

    def shape(self) -> str:
        """Equal for claims of pods alike (the shell groups them: one placement each)."""
        return json.dumps([self.requests, self.selector, self.tolerations], sort_keys=True)


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


def claim_of(pod: Body) -> Claim:
    """The claim of one released, unbound pod (its requests, selector and tolerations)."""
    spec = pod.get("spec") or {}
    return Claim(
        requests=pod_requests(pod),
        selector=dict(spec.get("nodeSelector") or {}),
        tolerations=tuple(spec.get("tolerations") or ()),
    )


def awaits_placement(pod: Body) -> bool:
    """A pod released to the default scheduler and not bound yet (not gated, not
    leaving). Pods of Kueue or Volcano are theirs to admit and never counted."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    if spec.get("nodeName") or spec.get("schedulingGates") or meta.get("deletionTimestamp"):
        return False
    if spec.get("schedulerName", "default-scheduler") != "default-scheduler":
        return False
    if names.KUEUE_QUEUE in (meta.get("labels") or {}):
        return False
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


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


def _plus(a: Mapping[str, int], b: Mapping[str, int], times: int = 1) -> dict[str, int]:
    """``a + times * b``, per resource."""
    out = dict(a)
    for key, value in b.items():
        out[key] = out.get(key, 0) + value * times
    return out


def hold(
    pending: Sequence[Claim],
    nodes: Sequence[NodeInfo],
    used: Mapping[str, Mapping[str, int]],
) -> dict[str, dict[str, int]]:
    """Room held on ``nodes`` for the claims: each placed first fit, by node name,
    where it may go (ready, schedulable, its selector and tolerations) and fits."""
    held: dict[str, dict[str, int]] = {}
    open_nodes = sorted((n for n in nodes if n.ready and not n.unschedulable), key=lambda n: n.name)
    for claim in pending:
        left = claim.count
        for node in open_nodes:
            if left <= 0:
                break
            if not eligible(node, claim.selector, claim.tolerations):
                continue
            taken = held.get(node.name, {})
            room, _ = _per_node(
                claim.requests, node.allocatable, _plus(used.get(node.name, {}), taken)
            )
            placed = min(room, left)
            if placed:
                held[node.name] = _plus(taken, {**claim.requests, "pods": 1}, placed)
                left -= placed
    return held


def fit(
    demand: Mapping[str, int],
    wanted: int,
    nodes: Sequence[NodeInfo],
    used: Mapping[str, Mapping[str, int]],
    *,
    selector: Mapping[str, str],
    tolerations: Sequence[Mapping[str, Any]],
    pending: Sequence[Claim] = (),
) -> Fit:
    """Count the gang against the nodes, now and on an empty cluster.

    Now: allocatable minus bound usage minus the room ``hold`` keeps for
    ``pending`` (released pods of other gangs, not bound yet). Ever: allocatable
    alone, so "can never fit" never depends on what runs or waits.
    """
    candidates = [n for n in nodes if eligible(n, selector, tolerations)]
    held = hold(pending, candidates, used)
    want_text = ", ".join(f"{_amount(k, v)} {k}" for k, v in sorted(demand.items()) if v)
    ever = 0
    now = 0
    details = []
    for node in sorted(candidates, key=lambda n: n.name):
        cap_ever, _ = _per_node(demand, node.allocatable, {})
        ever += cap_ever
        taken = held.get(node.name, {})
        busy = _plus(used.get(node.name, {}), taken)
        if node.ready and not node.unschedulable:
            cap_now, limit_now = _per_node(demand, node.allocatable, busy)
        else:
            cap_now, limit_now = 0, "NotReady" if not node.ready else "cordoned"
        now += cap_now
        if cap_now == 0:
            if limit_now in ("NotReady", "cordoned"):
                details.append(f"{node.name}: {limit_now}")
            else:
                free = node.allocatable.get(limit_now, 0) - busy.get(limit_now, 0)
                total = node.allocatable.get(limit_now, 0)
                text = f"{node.name}: {_amount(limit_now, max(free, 0))} of {_amount(limit_now, total)} {limit_now} free"
                if taken.get(limit_now):
                    many = taken["pods"]
                    text += (
                        f" ({_amount(limit_now, taken[limit_now])} held for {many} released "
                        f"pod{'s' if many != 1 else ''} not bound yet)"
                    )
                details.append(text)
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
