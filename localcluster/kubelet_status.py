"""Pure pod status: what the kubelet reports from its containers' states.

Phase, conditions and container statuses follow the kubelet's rules
(``getPhase`` in kubelet_pods.go): Pending until init containers finish and a
container runs; Running while any runs or will be restarted; Succeeded when
every container exited 0 and none will restart; Failed when one failed and
none will restart (or an init container failed under restartPolicy Never).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Obj = Mapping[str, Any]


@dataclass(slots=True)
class ContainerState:
    """What the kubelet knows about one container (init, sidecar or regular)."""

    name: str
    image: str
    kind: str  # "init", "sidecar" or "regular"
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    container_id: str = ""
    will_restart: bool = True

    @property
    def running(self) -> bool:
        """Its process runs now."""
        return "running" in self.state

    @property
    def exit_code(self) -> int | None:
        """Exit code of the latest instance, if it terminated."""
        term = self.state.get("terminated")
        return None if term is None else int(term.get("exitCode", 0))

    def report(self) -> dict[str, Any]:
        """The ``containerStatuses[]`` entry."""
        out: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": f"pot-process://{self.image}",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.container_id:
            out["containerID"] = self.container_id
        return out


def phase(restart_policy: str, containers: Sequence[ContainerState], init_failed: bool) -> str:
    """The pod phase from its containers (regular ones; inits via ``init_failed``)."""
    if init_failed:
        return "Failed"
    regular = [c for c in containers if c.kind == "regular"]
    if not regular:
        return "Pending"
    if any(c.running for c in regular):
        return "Running"
    if any(c.exit_code is None for c in regular):
        # Waiting: either never started (Pending) or in back-off after a crash (Running).
        return "Running" if any(c.restart_count or c.last_state for c in regular) else "Pending"
    codes = [c.exit_code for c in regular]
    if restart_policy == "Always":
        return "Running"
    if all(code == 0 for code in codes):
        return "Succeeded"
    if restart_policy == "OnFailure" and any(c.will_restart for c in regular):
        return "Running"
    return "Failed"


def _condition(kind: str, ok: bool, now: str, reason: str = "") -> dict[str, Any]:
    cond: dict[str, Any] = {
        "type": kind,
        "status": "True" if ok else "False",
        "lastProbeTime": None,
        "lastTransitionTime": now,
    }
    if reason and not ok:
        cond["reason"] = reason
    return cond


def build(
    pod: Obj,
    containers: Sequence[ContainerState],
    *,
    pod_ip: str | None,
    host_ip: str,
    start_time: str,
    initialized: bool,
    init_failed: bool,
    sandbox_ready: bool,
    now: str,
    message: str = "",
    reason: str = "",
) -> dict[str, Any]:
    """The pod's ``status`` (transition times kept from the previous status)."""
    spec = pod.get("spec") or {}
    previous = {c.get("type"): c for c in (pod.get("status") or {}).get("conditions") or []}
    restart_policy = spec.get("restartPolicy", "Always")
    ph = phase(restart_policy, containers, init_failed)
    serving = [c for c in containers if c.kind in {"regular", "sidecar"}]
    ready = bool(serving) and all(c.ready for c in serving) and ph == "Running"
    unready = ",".join(c.name for c in serving if not c.ready)
    conditions = [
        _condition("PodReadyToStartContainers", sandbox_ready, now),
        _condition("Initialized", initialized, now, "ContainersNotInitialized"),
        _condition(
            "Ready",
            ready,
            now,
            "PodCompleted" if ph in {"Succeeded", "Failed"} else "ContainersNotReady",
        ),
        _condition(
            "ContainersReady",
            ready,
            now,
            "PodCompleted" if ph in {"Succeeded", "Failed"} else "ContainersNotReady",
        ),
        # A pod on this kubelet is bound: keep an earlier True, never an earlier
        # False (SchedulingGated/Unschedulable from before binding).
        previous["PodScheduled"]
        if (previous.get("PodScheduled") or {}).get("status") == "True"
        else _condition("PodScheduled", True, now),
    ]
    for cond in conditions:
        if (
            not ready
            and cond["type"] in {"Ready", "ContainersReady"}
            and unready
            and ph == "Running"
        ):
            cond["message"] = f"containers with unready status: [{unready.replace(',', ' ')}]"
        old = previous.get(cond["type"])
        if old is not None and old.get("status") == cond["status"]:
            cond["lastTransitionTime"] = old.get("lastTransitionTime", now)
    for kind in ("DisruptionTarget",):
        if kind in previous:
            conditions.append(previous[kind])
    status: dict[str, Any] = {
        "phase": ph,
        "conditions": conditions,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": start_time,
        "qosClass": qos_class(pod),
        "containerStatuses": [c.report() for c in containers if c.kind == "regular"],
        "initContainerStatuses": [c.report() for c in containers if c.kind != "regular"],
    }
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    if message:
        status["message"] = message
    if reason:
        status["reason"] = reason
    return status


def qos_class(pod: Obj) -> str:
    """Guaranteed, Burstable or BestEffort, from requests and limits."""
    containers = list((pod.get("spec") or {}).get("containers") or [])
    any_set = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        limits, requests = res.get("limits") or {}, res.get("requests") or {}
        if limits or requests:
            any_set = True
        for r in ("cpu", "memory"):
            if r not in limits or requests.get(r, limits.get(r)) != limits.get(r):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


UNKNOWN = {
    "exitCode": 137,
    "reason": "ContainerStatusUnknown",
    "message": "The container could not be located when the pod was terminated",
}
"""What Kubernetes reports for a container whose process vanished with its sandbox."""


def adopted_state(prev: Obj, *, kind: str, restart_policy: str, pod_ran: bool) -> dict[str, Any]:
    """The final state of a container that a previous kubelet ran, or {} to run it again.

    A restarted kubelet finds no processes (it killed the leftovers) and runs the pod again,
    except what the pod's restartPolicy forbids, as Kubernetes does when a sandbox is lost: a
    ``Never`` pod whose containers had started is not run again (those that were still
    running are reported terminated, ``ContainerStatusUnknown``, exit 137: the pod fails and
    its owner decides), and under ``OnFailure`` a container that had completed (exit 0) stays
    completed. Sidecars always run again. ``pod_ran``: some container of the pod had started.
    """
    if kind == "sidecar":
        return {}
    term = (prev.get("state") or {}).get("terminated")
    if restart_policy == "Never" and pod_ran:
        if term is not None:
            return {"terminated": dict(term)}
        return {"terminated": dict(UNKNOWN)}
    if (
        restart_policy == "OnFailure"
        and kind == "regular"
        and term is not None
        and int(term.get("exitCode", 1)) == 0
    ):
        return {"terminated": dict(term)}
    return {}


def summary(status: Obj) -> tuple[Any, ...]:
    """What of a pod status the kubelet owns and must see on the API server: the phase, its
    condition statuses and each container's state, readiness and restart count."""
    conditions = sorted(
        (str(c.get("type")), str(c.get("status")))
        for c in status.get("conditions") or []
        if c.get("type") in OWN_CONDITIONS
    )
    containers = tuple(
        (c.get("name"), c.get("ready"), c.get("restartCount"), tuple(c.get("state") or {}))
        for c in (status.get("containerStatuses") or [])
        + (status.get("initContainerStatuses") or [])
    )
    return (status.get("phase"), tuple(conditions), containers, status.get("podIP"))


OWN_CONDITIONS = frozenset({"PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady"})
"""The pod conditions the kubelet sets."""
