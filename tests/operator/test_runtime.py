"""The runtime's caches: node usage accounting, stale-write protection, expectations by uid."""

from __future__ import annotations

from typing import Any

from pot.operator import gang, names, runtime
from pot.operator.config import Config


def _pod(
    name: str,
    uid: str,
    rv: str,
    *,
    node: str = "",
    task: str = "t",
    phase: str = "Pending",
    gpus: int = 0,
) -> dict[str, Any]:
    labels = {**names.task_labels(task), names.LABEL_RANK: name[-1], names.LABEL_ATTEMPT: "0"}
    res = {"limits": {"nvidia.com/gpu": str(gpus)}} if gpus else {}
    spec: dict[str, Any] = {"containers": [{"name": "c", "resources": res}]}
    if node:
        spec["nodeName"] = node
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": uid,
            "resourceVersion": rv,
            "labels": labels,
        },
        "spec": spec,
        "status": {"phase": phase},
    }


def test_node_usage_follows_pod_lifecycle() -> None:
    rt = runtime.Runtime(Config())
    rt.observe_pod(_pod("t-node-0", "u0", "1", node="rig-0", phase="Running", gpus=2), False)
    assert rt.node_used["rig-0"]["nvidia.com/gpu"] == 2 and rt.node_used["rig-0"]["pods"] == 1
    rt.observe_pod(_pod("t-node-0", "u0", "2", node="rig-0", phase="Succeeded", gpus=2), False)
    assert rt.node_used["rig-0"]["nvidia.com/gpu"] == 0
    rt.observe_pod(_pod("t-node-0", "u0", "3", node="rig-0", phase="Succeeded", gpus=2), True)
    assert rt.task_pods[("ns", "t")] == {}


def test_older_watch_events_never_replace_newer_writes(make_example: Any) -> None:
    rt = runtime.Runtime(Config())
    task = make_example("task.yaml", ns="ns")
    task["metadata"]["resourceVersion"] = "9"
    rt.observe_task(task, False)
    stale = {**task, "metadata": {**task["metadata"], "resourceVersion": "5"}}
    rt.observe_task(stale, False)
    assert rt.tasks[("ns", "mlp-demo")]["metadata"]["resourceVersion"] == "9"


def test_expectations_are_keyed_by_uid() -> None:
    rt = runtime.Runtime(Config())
    key = ("ns", "t")
    old = _pod("t-node-0", "old", "1")
    rt.observe_pod(old, False)
    rt.expect_deleted(key, "old")
    assert rt.expected_pods(key)["t-node-0"]["metadata"]["deletionTimestamp"]
    rt.observe_pod(old, True)
    new = _pod("t-node-0", "new", "3")
    rt.expect_created(key, new)
    assert (
        "deletionTimestamp" not in rt.expected_pods(key)["t-node-0"]["metadata"]
    )  # same name, new pod
    rt.observe_pod(new, False)
    assert rt.expect[key].created == {}


def test_claims_from_reservation_to_binding() -> None:
    """A released pod holds room from the decision until it binds or goes."""
    rt = runtime.Runtime(Config())
    key, other = ("ns", "t"), ("ns", "u")
    claim = gang.Claim(requests={"nvidia.com/gpu": 2})
    rt.reserve(key, ["t-node-0", "t-node-1"], claim)
    assert [c.count for c in rt.pending(other)] == [2] and rt.pending(key) == []
    # A view older than the release (still gated) leaves the reservation alone.
    gated = _pod("t-node-0", "u0", "1", gpus=2)
    gated["spec"]["schedulingGates"] = [{"name": names.GANG_GATE}]
    rt.observe_pod(gated, False)
    assert [c.count for c in rt.pending(other)] == [2]
    rt.observe_pod(_pod("t-node-0", "u0", "2", gpus=2), False)  # released, unbound: the watch's
    rt.unreserve(key, ["t-node-0", "t-node-1"])  # t-node-1's create failed
    assert [c.count for c in rt.pending(other)] == [1]
    rt.observe_pod(_pod("t-node-0", "u0", "3", node="rig-0", gpus=2), False)  # bound
    assert rt.pending(other) == [] and rt.node_used["rig-0"]["nvidia.com/gpu"] == 2
    # A reservation the watch never confirms lapses.
    rt.reserve(key, ["t-node-1"], claim)
    held = rt.claims[("ns", "t-node-1")]
    assert held.reserved is not None
    held.reserved -= runtime.EXPECTATION_TTL + 1  # made that long ago
    assert rt.pending(other) == [] and rt.claims == {}
