"""The task reconciler's shell over a fake API server: what reaches the cluster.

No network and no real clock beyond ``datetime.now``: ``FakeKube`` answers at
once but yields to other coroutines on every request, as a real one does, so
two reconciles run interleaved the way the operator's workers run them. Each
test builds the runtime as the operator's watches would fill it, including
the cold start of a restarted operator (nothing in memory).
"""

from __future__ import annotations

import asyncio
import copy
import datetime
from typing import Any, cast

import pytest

from pot import errors
from pot.operator import builders_trainers, conditions, kubeapi, names, runtime, task_reconciler
from pot.operator.config import Config

NS = "ns"


class FakeKube:
    """Records every write; task status patches and pod creates behave as the API server's."""

    def __init__(self, rt: runtime.Runtime) -> None:
        self.rt = rt
        self.pods: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.refuse: Exception | None = None

    async def patch(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        sub: str = "",
        content_type: str = "",
    ) -> dict[str, Any]:
        await asyncio.sleep(0)
        self.calls.append(("patch", plural, name))
        if plural == names.TASKS:
            body = copy.deepcopy(self.rt.tasks[(NS, name)])
            body["status"] = copy.deepcopy(patch["status"])
            body["metadata"]["resourceVersion"] = str(int(body["metadata"]["resourceVersion"]) + 1)
            return body
        self.pods[name]["spec"].pop("schedulingGates", None)
        return copy.deepcopy(self.pods[name])

    async def create(self, body: dict[str, Any], plural: str) -> dict[str, Any] | None:
        await asyncio.sleep(0)
        self.calls.append(("create", plural, body["metadata"].get("name", "")))
        if plural != "pods":
            return copy.deepcopy(body)
        if self.refuse is not None:
            raise self.refuse
        pod = copy.deepcopy(body)
        pod["metadata"].update(uid=f"uid-{pod['metadata']['name']}", resourceVersion="1")
        pod["status"] = {"phase": "Pending"}
        self.pods[pod["metadata"]["name"]] = pod
        return copy.deepcopy(pod)

    async def delete(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        name: str,
        *,
        uid: str = "",
        grace: int | None = None,
    ) -> bool:
        await asyncio.sleep(0)
        self.calls.append(("delete", plural, name, grace))
        return True

    def deleted(self) -> dict[str, int | None]:
        """Pod name -> the grace period of its delete (0: forced)."""
        return {c[2]: c[3] for c in self.calls if c[0] == "delete" and c[1] == "pods"}


class NoValidators:
    """The validators' API: nothing to report (progress is not under test here)."""

    async def task(self, bases: list[str], task_id: str) -> None:
        return None


def _status(phase: str, reason: str, *conds: tuple[str, str, str]) -> dict[str, Any]:
    stamp = conditions.timestamp(datetime.datetime.now(datetime.UTC))
    return {
        "phase": phase,
        "reason": reason,
        "message": "",
        "restarts": 0,
        "conditions": [
            {"type": "Registered", "status": "True", "lastTransitionTime": stamp},
            *(
                {"type": t, "status": s, "reason": r, "message": "", "lastTransitionTime": stamp}
                for t, s, r in conds
            ),
        ],
    }


def _task(make_example: Any, rt: runtime.Runtime, name: str, **resources: Any) -> dict[str, Any]:
    task = make_example("task.yaml", name=name, ns=NS, uid=f"uid-{name}")
    task["spec"]["resources"].update(resources)
    # Created now: the reconcile reads the real clock, and the example's
    # activeDeadlineSeconds counts from the creation until training starts.
    created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    task["metadata"]["creationTimestamp"] = created
    task["status"] = _status("Scheduling", "Creating")
    rt.observe_task(task, False)
    # The set it registered with (a task past Pending whose set is gone fails).
    vset = make_example("validatorset.yaml", ns=NS)
    rt.vsets[(NS, vset["metadata"]["name"])] = vset
    return task


def _pod(
    task: dict[str, Any], rank: int, *, node: str = "", phase: str = "Running"
) -> dict[str, Any]:
    pod = builders_trainers.build_pod_spec(task, rank, 0, Config(), gated=False)
    pod["metadata"].update(uid=f"uid-{pod['metadata']['name']}", resourceVersion="5")
    if node:
        pod["spec"]["nodeName"] = node
    pod["status"] = {"phase": phase}
    return pod


def _reason(rt: runtime.Runtime, name: str) -> str:
    return str(rt.tasks[(NS, name)]["status"]["reason"])


async def _reconcile(rt: runtime.Runtime, kube: FakeKube, name: str) -> None:
    # Stand-ins for kubeapi.Client and validators_client.Client (the calls the shell makes).
    await task_reconciler.reconcile(rt, cast(Any, kube), cast(Any, NoValidators()), NS, name)


async def test_two_gangs_competing_for_one_nodes_gpus_release_only_one(
    make_example: Any, make_node: Any
) -> None:
    rt = runtime.Runtime(Config())
    rt.observe_node(make_node("rig-0", gpus=4), False)
    for name in ("a", "b"):
        _task(make_example, rt, name, nodes=1, gpusPerNode=4, backend="nccl")
    kube = FakeKube(rt)
    # Two workers at once: b counts while a's writes are still in flight.
    await asyncio.gather(_reconcile(rt, kube, "a"), _reconcile(rt, kube, "b"))
    assert "schedulingGates" not in kube.pods["a-node-0"]["spec"]
    assert kube.pods["b-node-0"]["spec"]["schedulingGates"] == [{"name": names.GANG_GATE}]
    assert _reason(rt, "a") == "Released" and _reason(rt, "b") == "InsufficientCapacity"
    assert "(4 held for 1 released pod not bound yet)" in rt.tasks[(NS, "b")]["status"]["message"]
    # The watch shows a's pod released, not bound (a restarted operator sees only this).
    for pod in kube.pods.values():
        rt.observe_pod(copy.deepcopy(pod), False)
    await _reconcile(rt, kube, "b")
    assert _reason(rt, "b") == "InsufficientCapacity"
    assert [c.count for c in rt.pending((NS, "b"))] == [1]  # a's pod, counted once
    # Bound and running, then done: only then does b's gang go.
    a_pod = kube.pods["a-node-0"]
    rt.observe_pod({**a_pod, "spec": {**a_pod["spec"], "nodeName": "rig-0"}}, False)
    assert rt.pending((NS, "b")) == []
    await _reconcile(rt, kube, "b")
    assert _reason(rt, "b") == "InsufficientCapacity"
    finished = {**a_pod, "spec": {**a_pod["spec"], "nodeName": "rig-0"}}
    rt.observe_pod({**finished, "status": {"phase": "Succeeded"}}, False)
    await _reconcile(rt, kube, "b")
    assert _reason(rt, "b") == "Released"
    assert [c[2] for c in kube.calls if c[:2] == ("patch", "pods")] == ["b-node-0"]


def _running_gang(make_example: Any, make_node: Any) -> tuple[runtime.Runtime, dict[str, Any]]:
    rt = runtime.Runtime(Config())
    for rig in ("rig-0", "rig-1"):
        rt.observe_node(make_node(rig), False)
    task = _task(make_example, rt, "t")
    task["status"] = _status(
        "Training",
        "GangRunning",
        ("GangScheduled", "True", "Scheduled"),
        ("Training", "True", "GangRunning"),
    )
    rt.observe_task(task, False)
    for rank in range(2):
        rt.observe_pod(_pod(task, rank, node=f"rig-{rank}"), False)
    return rt, task


async def test_member_stuck_terminating_on_a_lost_node_is_forced_then_the_gang_restarts(
    make_example: Any, make_node: Any
) -> None:
    rt, task = _running_gang(make_example, make_node)
    kube = FakeKube(rt)
    # rig-1 stops reporting; the taint manager evicts its pod, which no kubelet confirms.
    rt.observe_node(make_node("rig-1", ready=False), False)
    stuck = _pod(task, 1, node="rig-1")
    stuck["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    rt.observe_pod(stuck, False)
    await _reconcile(rt, kube, "t")
    assert kube.deleted() == {"t-node-1": 0}
    rt.observe_pod(stuck, True)  # the forced delete lands
    await _reconcile(rt, kube, "t")
    status = rt.tasks[(NS, "t")]["status"]
    assert status["reason"] == "GangRestarting" and status["restarts"] == 1
    assert kube.deleted() == {"t-node-1": 0, "t-node-0": None}


async def test_member_on_a_deleted_node_restarts_the_gang(
    make_example: Any, make_node: Any
) -> None:
    rt, _ = _running_gang(make_example, make_node)
    kube = FakeKube(rt)
    rt.observe_node(make_node("rig-1"), True)
    await _reconcile(rt, kube, "t")
    status = rt.tasks[(NS, "t")]["status"]
    assert status["reason"] == "GangRestarting" and "its node rig-1 is gone" in status["message"]
    assert kube.deleted() == {"t-node-0": None, "t-node-1": 0}


async def test_restarted_operator_still_times_out_a_partly_bound_gang(
    make_example: Any, make_node: Any
) -> None:
    rt = runtime.Runtime(Config(gang_timeout=120))  # fresh: nothing in memory
    rt.observe_node(make_node("rig-0"), False)
    task = _task(make_example, rt, "t")
    task["status"] = _status("Scheduling", "Released", ("GangScheduled", "Unknown", "Released"))
    then = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=200)
    task["status"]["conditions"][1]["lastTransitionTime"] = conditions.timestamp(then)
    rt.observe_task(task, False)
    rt.observe_pod(_pod(task, 0, node="rig-0"), False)
    rt.observe_pod(_pod(task, 1, phase="Pending"), False)
    kube = FakeKube(rt)
    await _reconcile(rt, kube, "t")
    status = rt.tasks[(NS, "t")]["status"]
    assert (
        status["reason"] == "InsufficientCapacity" and "not placed within 120s" in status["message"]
    )
    assert set(kube.deleted()) == {"t-node-0", "t-node-1"}


TOLERATION_422 = (
    'POST /api/v1/namespaces/ns/pods: Pod "t-node-0" is invalid: spec.tolerations[0].operator: '
    "Invalid value: \"Exists\": value must be empty when `operator` is 'Exists'"
)
PRIORITY_403 = (
    'POST /api/v1/namespaces/ns/pods: pods "t-node-0" is forbidden: '
    "no PriorityClass with name farm-high was found"
)


@pytest.mark.parametrize(
    ("error", "names_it"),
    [
        (kubeapi.ApiError(422, "Invalid", TOLERATION_422), "spec.tolerations[0].operator"),
        (kubeapi.ApiError(403, "Forbidden", PRIORITY_403), "spec.resources.priorityClassName"),
    ],
)
async def test_pod_refused_for_its_spec_fails_the_task_naming_the_field(
    make_example: Any, make_node: Any, error: Exception, names_it: str
) -> None:
    rt = runtime.Runtime(Config())
    rt.observe_node(make_node("rig-0"), False)
    _task(
        make_example,
        rt,
        "t",
        tolerations=[{"key": "k", "operator": "Exists", "value": "x"}],
        priorityClassName="farm-high",
    )
    kube = FakeKube(rt)
    kube.refuse = error
    await _reconcile(rt, kube, "t")  # no exception: no retry loop, no traceback
    assert rt.claims == {}  # the refused gang holds no room
    await _reconcile(rt, kube, "t")
    status = rt.tasks[(NS, "t")]["status"]
    assert status["phase"] == "Failed" and status["reason"] == "InvalidSpec"
    assert names_it in status["message"]
    assert status["message"].startswith("the API server refused trainer pod t-node-0: ")
    assert "POST" not in status["message"]


@pytest.mark.parametrize(
    "error",
    [
        kubeapi.ApiError(403, "Forbidden", 'pods "t-node-0" is forbidden: exceeded quota: q'),
        kubeapi.ApiError(500, "InternalError", "etcd timeout"),
        errors.ClusterError("POST /api/v1/namespaces/ns/pods: API server unreachable"),
    ],
)
async def test_transient_pod_create_errors_are_retried(
    make_example: Any, make_node: Any, error: Exception
) -> None:
    rt = runtime.Runtime(Config())
    rt.observe_node(make_node("rig-0"), False)
    _task(make_example, rt, "t", priorityClassName="farm-high")
    kube = FakeKube(rt)
    kube.refuse = error
    with pytest.raises(errors.ClusterError):  # the worker retries with backoff
        await _reconcile(rt, kube, "t")
    assert rt.claims == {} and not rt.rejections
    assert rt.tasks[(NS, "t")]["status"]["phase"] == "Scheduling"
