"""Tasks that never reach Training must still end, and say why they wait.

A trainer pod whose image cannot be pulled (a typo in ``spec.model.image``, a
private registry without credentials) sits Pending, bound, for ever: the gang
is Scheduling/Starting with no word of the cause, and ``activeDeadlineSeconds``
counted only from ``startTime`` (set when training starts), so it never fired.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import pytest

from pot.operator import gang, phases, runtime

from .phases_kit import T0, world


@pytest.fixture
def task(make_example: Any) -> dict[str, Any]:
    return make_example("task.yaml")


@pytest.fixture
def nodes(make_node: Any) -> list[gang.NodeInfo]:
    return [gang.node_info(make_node("rig-0")), gang.node_info(make_node("rig-1"))]


def pull_failing_pod(rank: int) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"mlp-demo-node-{rank}",
            "uid": f"u{rank}",
            "labels": {"pot.dev/node-rank": str(rank), "pot.dev/attempt": "0"},
        },
        "spec": {"nodeName": f"rig-{rank}", "containers": [{"name": "trainer"}]},
        "status": {
            "phase": "Pending",
            "containerStatuses": [
                {
                    "name": "trainer",
                    "state": {
                        "waiting": {
                            "reason": "ImagePullBackOff",
                            "message": 'Back-off pulling image "ghcr.io/acme/trainr:1"',
                        }
                    },
                }
            ],
        },
    }


def starting(rank: int) -> dict[str, Any]:
    pod = pull_failing_pod(rank)
    pod["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "ContainerCreating"}}
    return pod


def views(*bodies: dict[str, Any]) -> list[phases.PodView]:
    out = [phases.pod_view(runtime.slim_pod(b)) for b in bodies]  # through the operator's cache
    assert all(v is not None for v in out)
    return [v for v in out if v is not None]


def test_a_pod_that_cannot_pull_its_image_is_named_in_the_status(
    task: dict[str, Any], nodes: list[gang.NodeInfo]
) -> None:
    task["status"] = {"phase": "Scheduling", "reason": "Released", "restarts": 0}
    plan = phases.decide(world(task, nodes, pods=views(starting(0), pull_failing_pod(1))))
    assert plan.status["reason"] == "Starting"
    assert plan.status["message"] == (
        "all 2 pods bound; waiting for their containers (mlp-demo-node-1: container trainer "
        'waiting: ImagePullBackOff: Back-off pulling image "ghcr.io/acme/trainr:1")'
    )
    # Containers merely being created are not news.
    plan = phases.decide(world(task, nodes, pods=views(starting(0), starting(1))))
    assert plan.status["message"] == "all 2 pods bound; waiting for their containers"


@pytest.mark.parametrize(
    "status",
    [
        {"phase": "Scheduling", "reason": "Starting", "restarts": 0},
        {"phase": "Pending", "reason": "ValidatorsUnavailable"},
    ],
)
def test_the_deadline_ends_a_task_that_never_started_training(
    task: dict[str, Any], nodes: list[gang.NodeInfo], status: dict[str, Any]
) -> None:
    task["spec"]["runPolicy"]["activeDeadlineSeconds"] = 600
    task["status"] = status
    stuck = views(pull_failing_pod(0), pull_failing_pod(1)) if status["phase"] != "Pending" else []
    early = phases.decide(world(task, nodes, pods=stuck))  # 60 s after the creation
    assert early.status["phase"] != "Failed"
    late = T0 + datetime.timedelta(minutes=20)
    plan = phases.decide(world(task, nodes, pods=stuck, now=late))
    assert plan.status["phase"] == "Failed" and plan.status["reason"] == "DeadlineExceeded"
    assert plan.status["message"] == (
        "ran longer than runPolicy.activeDeadlineSeconds=600 (created 2026-01-01T00:00:00Z)"
    )
    assert {p.name for p in plan.delete} == {p.name for p in stuck}


def test_the_deadline_counts_from_start_time_once_training_started(
    task: dict[str, Any], nodes: list[gang.NodeInfo]
) -> None:
    task["spec"]["runPolicy"]["activeDeadlineSeconds"] = 600
    task["status"] = {
        "phase": "Scheduling",
        "reason": "GangRestarting",
        "restarts": 1,
        "startTime": "2026-01-01T00:15:00Z",
    }
    late = T0 + datetime.timedelta(minutes=20)  # 21 min after creation, 6 after start
    assert phases.decide(world(task, nodes, now=late)).status["phase"] != "Failed"


def test_progress_never_goes_backwards_when_a_lagging_replica_answers(
    task: dict[str, Any], nodes: list[gang.NodeInfo]
) -> None:
    """The operator asks the first replica that answers; one catching up after a
    restart knows fewer segments than the status already shows."""
    running = [
        phases.PodView(
            name=f"mlp-demo-node-{r}", rank=r, attempt=0, gated=False, node="rig-0", phase="Running"
        )
        for r in range(2)
    ]
    task["status"] = {"phase": "Training", "reason": "GangRunning", "restarts": 0}
    ahead = {"step": 150, "totalSteps": 200, "segmentsCommitted": 6, "segmentsVerified": 4}
    plan = phases.decide(world(task, nodes, pods=running, progress={"progress": ahead}))
    task = {**task, "status": plan.status}
    behind = {"step": 50, "totalSteps": 200, "segmentsCommitted": 2, "segmentsVerified": 1}
    plan = phases.decide(world(task, nodes, pods=running, progress={"progress": behind}))
    assert plan.status["progress"] == {
        "step": 150,
        "totalSteps": 200,
        "text": "150/200",
        "segmentsCommitted": 6,
        "segmentsVerified": 4,
        "segmentsRejected": 0,
    }
    assert not plan.status_changed
    # A replica whose answer carries only the allocation moves nothing back either.
    done = [dataclasses.replace(p, phase="Succeeded") for p in running]
    plan = phases.decide(world(task, nodes, pods=done, progress={"allocation": {"digest": "0x1"}}))
    assert plan.status["phase"] == "Settling" and plan.status["progress"]["step"] == 150
