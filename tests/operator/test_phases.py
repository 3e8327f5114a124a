"""The TrainingTask state machine, one scenario per rule of DESIGN §4 and issue 8."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from pot.operator import checks, conditions, gang, phases

from . import phases_kit
from .phases_kit import KEYS, T0


@pytest.fixture
def task(make_example: Any) -> dict[str, Any]:
    return make_example("task.yaml")


@pytest.fixture
def nodes(make_node: Any) -> list[gang.NodeInfo]:
    return [gang.node_info(make_node("rig-0")), gang.node_info(make_node("rig-1"))]


def world(task: dict[str, Any], nodes: list[gang.NodeInfo], **kw: Any) -> phases.World:
    return phases_kit.world(task, nodes, **{"grace": 30.0, **kw})


def pods(n: int, attempt: int = 0, **kw: Any) -> list[phases.PodView]:
    return [
        phases.PodView(
            name=f"mlp-demo-node-{r}", rank=r, attempt=attempt, uid=f"u{attempt}{r}", **kw
        )
        for r in range(n)
    ]


def step(task: dict[str, Any], plan: phases.Plan) -> dict[str, Any]:
    """Apply a plan's status to the task, as the API server would."""
    return {**task, "status": plan.status}


def cond(plan: phases.Plan, ctype: str) -> dict[str, Any]:
    found = conditions.find(plan.status.get("conditions"), ctype)
    assert found is not None, ctype
    return dict(found)


def test_happy_path_releases_all_together_then_trains(
    task: dict[str, Any], nodes: list[gang.NodeInfo]
) -> None:
    plan = phases.decide(world(task, nodes))
    assert plan.register and not plan.create_ranks
    w = world(task, nodes, registration=phases.Registration("ok"))
    plan = phases.decide(w)
    assert (
        plan.status["phase"] == "Scheduling"
        and plan.create_ranks == [0, 1]
        and plan.ensure_children
    )
    assert cond(plan, "Registered")["status"] == "True"
    # A fresh gang that fits: counted, then created ungated (no release patches).
    assert plan.create_released and not plan.release
    assert [e.reason for e in plan.events] == ["Released"]
    task = step(task, plan)
    # A crash after one create: the rest is created, ungated; not a gang failure.
    plan = phases.decide(world(task, nodes, pods=pods(1, gated=False)))
    assert plan.create_ranks == [1] and plan.create_released and not plan.release
    assert plan.status.get("restarts", 0) == 0 and not plan.delete
    assert not plan.status_changed and not plan.events  # nothing new to say
    plan = phases.decide(world(task, nodes, pods=pods(2, gated=False)))
    assert plan.status["phase"] == "Scheduling" and plan.status["reason"] == "Released"
    assert "waiting for the scheduler" in cond(plan, "GangScheduled")["message"]
    assert not plan.status_changed  # unbound pods: the same state, no status write
    plan = phases.decide(
        world(task, nodes, pods=pods(2, gated=False, node="rig-0", phase="Running"))
    )
    assert plan.status["phase"] == "Training" and plan.status["startTime"] == "2026-01-01T00:01:00Z"
    assert (
        cond(plan, "GangScheduled")["status"] == "True"
        and cond(plan, "Training")["status"] == "True"
    )
    assert plan.status["progress"]["text"] == "0/200"
    task = step(task, plan)
    nothing_yet = {"progress": {"step": 0, "totalSteps": 200, "segmentsCommitted": 0}}
    plan = phases.decide(
        world(
            task,
            nodes,
            pods=pods(2, gated=False, node="rig-0", phase="Running"),
            progress=nothing_yet,
        )
    )
    assert not plan.status_changed  # the validators' first answer says nothing new: no write
    prog = {
        "progress": {"step": 50, "totalSteps": 200, "segmentsCommitted": 2, "segmentsVerified": 1}
    }
    plan = phases.decide(
        world(task, nodes, pods=pods(2, gated=False, node="rig-0", phase="Running"), progress=prog)
    )
    assert (
        plan.status["progress"]["text"] == "50/200"
        and plan.status["progress"]["segmentsVerified"] == 1
    )
    assert not plan.events  # no transition, no event
    done = pods(2, gated=False, node="rig-0", phase="Succeeded")
    plan = phases.decide(world(step(task, plan), nodes, pods=done))
    assert plan.status["phase"] == "Verifying"
    task = step(task, plan)
    plan = phases.decide(world(task, nodes, pods=done, progress={"allocation": {"digest": "0x1"}}))
    assert plan.status["phase"] == "Settling" and cond(plan, "Verified")["status"] == "True"
    receipt = {
        "txHash": "0xabc",
        "block": 7,
        "payouts": [{"address": "0x1", "amount": "5", "role": "miner"}],
    }
    plan = phases.decide(
        world(
            step(task, plan), nodes, pods=done, progress={"allocation": {}, "settlement": receipt}
        )
    )
    assert plan.status["phase"] == "Succeeded" and plan.status["settlement"] == receipt
    assert plan.status["completionTime"] and plan.status["observedGeneration"] == 1


def test_missing_validator_set_waits_then_fails_naming_it(
    task: dict[str, Any], nodes: list[gang.NodeInfo]
) -> None:
    early = datetime.datetime(2026, 1, 1, 0, 0, 10, tzinfo=datetime.UTC)
    plan = phases.decide(world(task, nodes, vset=None, now=early))
    assert plan.status["phase"] == "Pending" and plan.status["reason"] == "ValidatorSetNotFound"
    assert plan.requeue is not None and not plan.create_ranks
    plan = phases.decide(world(task, nodes, vset=None))
    assert plan.status["phase"] == "Failed" and plan.status["reason"] == "ValidatorSetNotFound"
    assert 'ValidatorSet "vset"' in plan.status["message"]
    assert not plan.create_ranks and not plan.register
    assert plan.events[0].type == "Warning"


def test_validator_set_without_quorum_waits(
    task: dict[str, Any], nodes: list[gang.NodeInfo]
) -> None:
    plan = phases.decide(world(task, nodes, vset=checks.VsetView("vset", "Progressing", False)))
    assert plan.status["phase"] == "Pending" and plan.status["reason"] == "ValidatorSetNotReady"


def test_never_fitting_gang_fails_unschedulable_with_numbers(
    make_example: Any, nodes: list[gang.NodeInfo]
) -> None:
    task = make_example("task-gpu.yaml")
    plan = phases.decide(world(task, nodes, miner_keys=KEYS))
    assert plan.status["phase"] == "Failed" and plan.status["reason"] == "Unschedulable"
    assert "8 nvidia.com/gpu" in plan.status["message"] and "room for 0" in plan.status["message"]
    assert not plan.create_ranks


def test_gang_waits_gated_for_capacity(task: dict[str, Any], make_node: Any) -> None:
    small = [gang.node_info(make_node("rig-0", cpu="1"))]  # one pod of 1 cpu at a time
    task["status"] = {
        "phase": "Scheduling",
        "restarts": 0,
        "conditions": [{"type": "Registered", "status": "True"}],
    }
    plan = phases.decide(world(task, small, pods=pods(2)))
    assert (not plan.release and plan.status["reason"] == "Unschedulable") or plan.status[
        "phase"
    ] == "Failed"
    nodes = [gang.node_info(make_node("rig-0", cpu="2"))]
    busy = {"rig-0": {"cpu": 1500, "pods": 1}}
    plan = phases.decide(world(task, nodes, pods=pods(2), used=busy))
    assert not plan.release
    assert plan.status["phase"] == "Scheduling" and plan.status["reason"] == "InsufficientCapacity"
    assert "500m of 2 cpu free" in plan.status["message"]
    assert cond(plan, "GangScheduled")["reason"] == "InsufficientCapacity"
    plan = phases.decide(world(step(task, plan), nodes, pods=pods(2), used={}))
    assert plan.release == ["mlp-demo-node-0", "mlp-demo-node-1"]


def test_partial_release_is_completed(task: dict[str, Any], nodes: list[gang.NodeInfo]) -> None:
    task["status"] = {"phase": "Scheduling", "restarts": 0}
    mixed = [pods(2)[0], phases.PodView(name="mlp-demo-node-1", rank=1, attempt=0, gated=False)]
    plan = phases.decide(world(task, nodes, pods=mixed))
    assert plan.release == ["mlp-demo-node-0"]


def test_member_failure_restarts_whole_gang_then_backoff(
    task: dict[str, Any], nodes: list[gang.NodeInfo]
) -> None:
    task["spec"]["runPolicy"]["backoffLimit"] = 1
    task["status"] = {"phase": "Training", "restarts": 0, "startTime": "2026-01-01T00:00:30Z"}
    running = pods(2, gated=False, node="rig-0", phase="Running")
    failed = [
        running[0],
        phases.PodView(
            name="mlp-demo-node-1",
            rank=1,
            attempt=0,
            uid="u01",
            phase="Failed",
            gated=False,
            message="container trainer exited with code 1",
        ),
    ]
    plan = phases.decide(world(task, nodes, pods=failed))
    assert plan.status["restarts"] == 1 and plan.attempt == 1
    assert plan.status["phase"] == "Scheduling" and plan.status["reason"] == "GangRestarting"
    assert (
        "exited with code 1" in plan.status["message"]
        and "last committed checkpoint" in plan.status["message"]
    )
    assert {p.name for p in plan.delete} == {
        "mlp-demo-node-0",
        "mlp-demo-node-1",
    }  # #1579: all of them
    task = step(task, plan)
    # Old pods still terminating: wait, create nothing (names are reused).
    plan = phases.decide(
        world(
            task,
            nodes,
            pods=[phases.PodView(name="mlp-demo-node-0", rank=0, attempt=0, deleting=True)],
        )
    )
    assert not plan.create_ranks and not plan.delete
    plan = phases.decide(world(task, nodes, pods=[]))
    assert plan.create_ranks == [0, 1] and plan.attempt == 1
    # The restarted gang runs, then a node dies: its pod is gone.
    task = step(task, plan)
    plan = phases.decide(
        world(task, nodes, pods=pods(2, attempt=1, gated=False, node="rig-0", phase="Running"))
    )
    task = step(task, plan)
    assert task["status"]["phase"] == "Training"
    plan = phases.decide(
        world(task, nodes, pods=pods(1, attempt=1, gated=False, node="rig-0", phase="Running"))
    )
    assert plan.status["phase"] == "Failed" and plan.status["reason"] == "BackoffLimitExceeded"
    assert "backoffLimit=1" in plan.status["message"] and "gone" in plan.status["message"]
    assert [p.name for p in plan.delete] == ["mlp-demo-node-0"]


def test_stale_attempt_pods_are_deleted(task: dict[str, Any], nodes: list[gang.NodeInfo]) -> None:
    task["status"] = {"phase": "Scheduling", "restarts": 2}
    plan = phases.decide(world(task, nodes, pods=pods(2, attempt=1, gated=False)))
    assert {p.name for p in plan.delete} == {
        "mlp-demo-node-0",
        "mlp-demo-node-1",
    } and not plan.create_ranks


@pytest.mark.parametrize(
    ("phase", "progress"),
    [("Verifying", None), ("Settling", {"allocation": {"digest": "0x1"}})],
)
def test_deadline_never_fails_a_task_that_finished_training(
    task: dict[str, Any], nodes: list[gang.NodeInfo], phase: str, progress: Any
) -> None:
    """Like a Job's, activeDeadlineSeconds bounds the run: a gang that completed
    is verified and paid however long the validators and the chain take."""
    task["spec"]["runPolicy"]["activeDeadlineSeconds"] = 10
    task["status"] = {"phase": phase, "reason": "x", "startTime": "2026-01-01T00:00:00Z"}
    done = pods(2, gated=False, node="rig-0", phase="Succeeded")
    plan = phases.decide(world(task, nodes, pods=done, progress=progress))
    assert plan.status["phase"] == ("Settling" if progress else "Verifying")
    receipt = {"txHash": "0xabc", "block": 7, "payouts": []}
    plan = phases.decide(
        world(
            step(task, plan), nodes, pods=done, progress={"allocation": {}, "settlement": receipt}
        )
    )
    assert plan.status["phase"] == "Succeeded" and plan.status["reason"] == "Settled"
    # The pass that sees the gang complete does not fail it either.
    task["status"] = {
        "phase": "Training",
        "reason": "GangRunning",
        "startTime": "2026-01-01T00:00:00Z",
    }
    plan = phases.decide(world(task, nodes, pods=done))
    assert plan.status["phase"] == "Verifying"


def test_deadline_and_ttl(task: dict[str, Any], nodes: list[gang.NodeInfo]) -> None:
    task["spec"]["runPolicy"].update(activeDeadlineSeconds=10, ttlSecondsAfterFinished=60)
    task["status"] = {"phase": "Training", "startTime": "2026-01-01T00:00:00Z"}
    running = pods(2, gated=False, node="rig-0", phase="Running")
    plan = phases.decide(world(task, nodes, pods=running))
    assert plan.status["phase"] == "Failed" and plan.status["reason"] == "DeadlineExceeded"
    assert len(plan.delete) == 2
    done = {**task, "status": {"phase": "Succeeded", "completionTime": "2026-01-01T00:00:30Z"}}
    finished = pods(2, gated=False, node="rig-0", phase="Succeeded")
    plan = phases.decide(world(done, nodes, pods=finished))
    assert not plan.delete and plan.requeue == pytest.approx(30)
    later = T0 + datetime.timedelta(minutes=1)
    assert len(phases.decide(world(done, nodes, pods=finished, now=later)).delete) == 2


def test_registration_outcomes(task: dict[str, Any], nodes: list[gang.NodeInfo]) -> None:
    plan = phases.decide(
        world(task, nodes, registration=phases.Registration("rejected", "spec.dataset: unknown"))
    )
    assert plan.status["phase"] == "Failed" and plan.status["reason"] == "ValidatorsRejected"
    assert "spec.dataset" in plan.status["message"]
    plan = phases.decide(
        world(task, nodes, registration=phases.Registration("unavailable", "refused"))
    )
    assert (
        plan.status["phase"] == "Pending"
        and plan.status["reason"] == "ValidatorsUnavailable"
        and plan.requeue
    )


def test_released_gang_stuck_unbound_is_regated(
    task: dict[str, Any], nodes: list[gang.NodeInfo]
) -> None:
    task["status"] = {"phase": "Scheduling", "restarts": 0}
    plan = phases.decide(world(task, nodes))  # a fresh gang that fits: released at T0
    assert plan.create_released and cond(plan, "GangScheduled")["status"] == "Unknown"
    task = step(task, plan)
    unbound = [
        phases.PodView(
            name=f"mlp-demo-node-{r}",
            rank=r,
            attempt=0,
            gated=False,
            node="rig-0" if r == 0 else None,
            message="0/2 nodes are available",
        )
        for r in range(2)
    ]
    later = T0 + datetime.timedelta(seconds=10)
    plan = phases.decide(world(task, nodes, pods=unbound, now=later, gang_timeout=60))
    assert not plan.delete and plan.status["reason"] == "Released" and not plan.status_changed
    later = T0 + datetime.timedelta(seconds=61)
    plan = phases.decide(world(task, nodes, pods=unbound, now=later, gang_timeout=60))
    assert len(plan.delete) == 2 and plan.status["reason"] == "InsufficientCapacity"
    assert plan.status.get("restarts", 0) == 0  # not a failure of the task
    assert cond(plan, "GangScheduled")["status"] == "False"  # the next release times afresh


def test_gang_timeout_survives_an_operator_restart(
    task: dict[str, Any], nodes: list[gang.NodeInfo]
) -> None:
    """The release time is read from the status: a restarted operator (nothing in
    memory, as after every Helm upgrade) still takes a partly bound gang down."""
    released = "2026-01-01T00:00:00Z"
    task["status"] = {
        "phase": "Scheduling",
        "reason": "Released",
        "message": "all 2 pods released together",
        "restarts": 0,
        "conditions": [
            {"type": "Registered", "status": "True", "lastTransitionTime": released},
            {
                "type": "GangScheduled",
                "status": "Unknown",
                "reason": "Released",
                "message": "all 2 pods released together; waiting for the scheduler",
                "lastTransitionTime": released,
            },
        ],
    }
    partly = [
        phases.PodView(name="mlp-demo-node-0", rank=0, attempt=0, gated=False, node="rig-0"),
        phases.PodView(name="mlp-demo-node-1", rank=1, attempt=0, gated=False, message="0/2 fit"),
    ]
    plan = phases.decide(world(task, nodes, pods=partly, gang_timeout=30))  # T0 = release + 60s
    assert plan.status["reason"] == "InsufficientCapacity" and len(plan.delete) == 2
    assert "not placed within 30s" in plan.status["message"] and "0/2 fit" in plan.status["message"]


def test_a_status_without_the_release_condition_starts_the_timer(
    task: dict[str, Any], nodes: list[gang.NodeInfo]
) -> None:
    """A released gang whose status lacks GangScheduled=Unknown (an older operator
    wrote it) is timed from now: never taken down at once, never forgotten."""
    task["status"] = {"phase": "Scheduling", "reason": "Released", "restarts": 0}
    unbound = pods(2, gated=False)
    plan = phases.decide(world(task, nodes, pods=unbound, gang_timeout=30))
    assert not plan.delete and plan.status_changed
    assert cond(plan, "GangScheduled")["lastTransitionTime"] == "2026-01-01T00:01:00Z"
    later = T0 + datetime.timedelta(seconds=31)
    plan = phases.decide(world(step(task, plan), nodes, pods=unbound, now=later, gang_timeout=30))
    assert len(plan.delete) == 2


def test_failed_task_never_leaves_pods_running(
    task: dict[str, Any], nodes: list[gang.NodeInfo]
) -> None:
    task["status"] = {"phase": "Failed", "completionTime": "2026-01-01T00:00:30Z"}
    plan = phases.decide(world(task, nodes, pods=pods(2, gated=False, phase="Running")))
    assert (len(plan.delete) == 2 and not plan.status_changed) or plan.status["phase"] == "Failed"


def test_invalid_spec_fails_once_with_one_event(
    task: dict[str, Any], nodes: list[gang.NodeInfo]
) -> None:
    task["metadata"]["name"] = "Bad_Name"
    plan = phases.decide(world(task, nodes))
    assert plan.status["phase"] == "Failed" and plan.status["reason"] == "InvalidSpec"
    plan2 = phases.decide(world(step(task, plan), nodes))
    assert not plan2.events and not plan2.status_changed


def test_pod_view_parses_failures() -> None:
    pod = {
        "metadata": {
            "name": "t-node-0",
            "uid": "u",
            "labels": {"pot.dev/node-rank": "0", "pot.dev/attempt": "3"},
        },
        "spec": {"nodeName": "rig-0"},
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {
                    "name": "trainer",
                    "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
                }
            ],
        },
    }
    view = phases.pod_view(pod)
    assert view is not None and view.attempt == 3 and not view.gated and view.node == "rig-0"
    assert view.message == "container trainer exited with code 137 (OOMKilled)"
    assert phases.pod_view({"metadata": {"name": "x"}}) is None


def test_a_failed_init_step_names_itself_and_its_message_through_the_slim_cache() -> None:
    from pot.operator import runtime

    pod = {
        "metadata": {
            "name": "t-rank-0",
            "uid": "u",
            "labels": {"pot.dev/node-rank": "0", "pot.dev/attempt": "0"},
        },
        "spec": {"nodeName": "rig-0", "containers": [{"name": "trainer"}]},
        "status": {
            "phase": "Failed",
            "initContainerStatuses": [
                {
                    "name": "state-owner",
                    "state": {
                        "terminated": {
                            "exitCode": 1,
                            "reason": "Error",
                            "message": "cannot hand /var/lib/pot/tasks/x to uid 65532\n",
                        }
                    },
                }
            ],
            "containerStatuses": [{"name": "trainer", "state": {"waiting": {}}}],
        },
    }
    view = phases.pod_view(runtime.slim_pod(pod))  # what the operator's pod cache keeps
    assert view is not None
    assert view.message == (
        "init container state-owner exited with code 1 (Error): "
        "cannot hand /var/lib/pot/tasks/x to uid 65532"
    )


def test_pods_stuck_on_a_lost_node_are_forced(
    task: dict[str, Any], nodes: list[gang.NodeInfo]
) -> None:
    task["status"] = {"phase": "Scheduling", "restarts": 1}
    stuck = phases.PodView(
        name="mlp-demo-node-1", rank=1, attempt=0, deleting=True, node="rig-1", node_lost=True
    )
    leaving = phases.PodView(name="mlp-demo-node-0", rank=0, attempt=0, deleting=True, node="rig-0")
    plan = phases.decide(world(task, nodes, pods=[stuck, leaving]))
    assert plan.force_delete == [stuck] and not plan.create_ranks


def _lost_world(task: dict[str, Any], make_node: Any, *, terminating: bool) -> phases.World:
    """A running gang whose rank 1 sits on rig-1, which stopped reporting (NotReady)."""
    task["status"] = {"phase": "Training", "reason": "GangRunning", "restarts": 0}
    watched = {
        "rig-0": gang.node_info(make_node("rig-0")),
        "rig-1": gang.node_info(make_node("rig-1", ready=False)),
    }
    bodies = []
    for rank in range(2):
        meta: dict[str, Any] = {
            "name": f"mlp-demo-node-{rank}",
            "uid": f"u{rank}",
            "labels": {"pot.dev/node-rank": str(rank), "pot.dev/attempt": "0"},
        }
        if rank == 1 and terminating:  # evicted by the taint manager; no kubelet confirms
            meta["deletionTimestamp"] = "2026-01-01T00:00:50Z"
        bodies.append(
            {"metadata": meta, "spec": {"nodeName": f"rig-{rank}"}, "status": {"phase": "Running"}}
        )
    views = [v for v in (phases.pod_view(b, watched) for b in bodies) if v is not None]
    return world(task, list(watched.values()), pods=views)


def test_pod_view_marks_pods_on_lost_nodes(make_node: Any) -> None:
    body = {
        "metadata": {
            "name": "t-node-0",
            "labels": {"pot.dev/node-rank": "0", "pot.dev/attempt": "0"},
        },
        "spec": {"nodeName": "rig-9"},
        "status": {"phase": "Running"},
    }
    ready = {"rig-9": gang.node_info(make_node("rig-9"))}
    down = {"rig-9": gang.node_info(make_node("rig-9", ready=False))}
    assert not _view(body, ready).node_lost
    assert _view(body, down).node_lost and _view(body, down).message == "its node rig-9 is NotReady"
    assert _view(body, {}).node_lost and "is gone" in _view(body, {}).message
    assert not _view(body, None).node_lost  # no node view given: nothing claimed


def _view(body: dict[str, Any], nodes: Any) -> phases.PodView:
    view = phases.pod_view(body, nodes)
    assert view is not None
    return view


def test_member_terminating_on_a_lost_node_is_forced_and_the_gang_restarts(
    task: dict[str, Any], make_node: Any
) -> None:
    w = _lost_world(task, make_node, terminating=True)
    plan = phases.decide(w)
    assert [p.name for p in plan.force_delete] == ["mlp-demo-node-1"] and not plan.create_ranks
    # Forced, it is gone: the missing member restarts the whole gang.
    w.pods = [p for p in w.pods if p.rank == 0]
    plan = phases.decide(w)
    assert plan.status["reason"] == "GangRestarting" and plan.status["restarts"] == 1
    assert [p.name for p in plan.delete] == ["mlp-demo-node-0"]


def test_member_on_a_lost_node_restarts_the_gang_at_once(
    task: dict[str, Any], make_node: Any
) -> None:
    """Not yet evicted (still "Running" on a NotReady node): as good as failed."""
    plan = phases.decide(_lost_world(task, make_node, terminating=False))
    assert plan.status["phase"] == "Scheduling" and plan.status["reason"] == "GangRestarting"
    assert "mlp-demo-node-1: its node rig-1 is NotReady" in plan.status["message"]
    assert [p.name for p in plan.delete] == ["mlp-demo-node-0"]
    assert [p.name for p in plan.force_delete] == ["mlp-demo-node-1"]


def test_pod_refused_by_the_api_server_fails_the_task_naming_the_field(
    task: dict[str, Any], nodes: list[gang.NodeInfo]
) -> None:
    task["status"] = {"phase": "Scheduling", "reason": "Released", "restarts": 0}
    why = (
        'the API server refused trainer pod mlp-demo-node-0: Pod "mlp-demo-node-0" is invalid: '
        'spec.tolerations[0].operator: Invalid value: "Exists": value must be empty'
    )
    plan = phases.decide(world(task, nodes, create_rejected=why))
    assert plan.status["phase"] == "Failed" and plan.status["reason"] == "InvalidSpec"
    assert "spec.tolerations[0].operator" in plan.status["message"] and not plan.create_ranks
    assert [e.reason for e in plan.events] == ["InvalidSpec"]


def test_released_pods_of_another_gang_hold_their_room(
    task: dict[str, Any], make_node: Any
) -> None:
    """Released, not bound yet: no node shows their usage, but the count must."""
    task["spec"]["resources"].update(nodes=1, gpusPerNode=4, backend="nccl")
    one = [gang.node_info(make_node("rig-0", gpus=4))]
    other = gang.Claim(requests={"cpu": 1000, "memory": 2**30, "nvidia.com/gpu": 4})
    task["status"] = {"phase": "Scheduling", "restarts": 0}
    plan = phases.decide(world(task, one, pending=[other]))
    assert not plan.create_released and plan.status["reason"] == "InsufficientCapacity"
    assert "held for 1 released pod not bound yet" in plan.status["message"]
    assert phases.decide(world(task, one)).create_released
