"""The operator on the local cluster (issues 3-4) under kopf's KopfRunner.

Validators and trainers are the stand-ins next to this file (docs/protocol.md's
HTTP API; a resumable step counter), selected through the operator's command
overrides; the default builders' real command lines are checked in
test_builders. Each test works in its own namespace of one shared cluster.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import gpu_holder, standin_env, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
GATE = "pot.dev/gang"


def _vset_ready(cluster: Any, ns: str) -> None:
    cluster.kubectl(
        "apply",
        "-n",
        ns,
        "-f",
        str(Path(__file__).resolve().parents[2] / "examples" / "validatorset.yaml"),
    )
    wait_for(
        "ValidatorSet Ready",
        lambda: (cluster.vset(ns).get("status") or {}).get("phase") == "Ready",
        timeout=60,
    )


def _status(cluster: Any, ns: str, name: str) -> dict[str, Any]:
    return cluster.task(ns, name).get("status") or {}


def test_validator_set_ready_with_primary_and_recovers(cluster: Any, operator: Any) -> None:
    ns = cluster.namespace("vsets")
    _vset_ready(cluster, ns)
    st = cluster.vset(ns)["status"]
    assert st["readyReplicas"] == 4 and st["primary"] == "vset-0" and st["view"] == 0
    conds = {c["type"]: c["status"] for c in st["conditions"]}
    assert conds["Ready"] == "True" and conds["QuorumAvailable"] == "True"
    assert conds["ChainReachable"] == "False"  # the example's RPC URL does not exist here
    peers = cluster.core.read_namespaced_config_map("vset-config", ns).data["peers.json"]
    assert "0x70997970C51812dc3A010C7d01b50e0d17dc79C8" in peers  # address of validator-0's dev key
    old = cluster.core.read_namespaced_pod("vset-2", ns).metadata.uid
    cluster.core.delete_namespaced_pod("vset-2", ns)
    wait_for(
        "vset-2 replaced",
        lambda: cluster.core.read_namespaced_pod("vset-2", ns).metadata.uid != old,
    )
    wait_for(
        "status to recover",
        lambda: (s := cluster.vset(ns)["status"])["phase"] == "Ready" and s["readyReplicas"] == 4,
        timeout=60,
    )


def test_fitting_task_releases_whole_gang_and_runs(cluster: Any, operator: Any) -> None:
    ns = cluster.namespace("fits")
    _vset_ready(cluster, ns)
    cluster.apply_task(ns, "fit", hyperparameters__steps=40, model__config={"standinSeconds": 0.05})
    pods = wait_for(
        "two pods", lambda: p if len(p := cluster.pods(ns, "pot.dev/task=fit")) == 2 else None
    )
    assert all(p.spec.hostname == p.metadata.name for p in pods)
    wait_for(
        "Verifying", lambda: _status(cluster, ns, "fit").get("phase") == "Verifying", timeout=60
    )
    st = _status(cluster, ns, "fit")
    assert {c["type"]: c["status"] for c in st["conditions"]} == {
        "Registered": "True",
        "GangScheduled": "True",
        "Training": "False",
    }
    assert st["startTime"]
    for pod in cluster.pods(ns, "pot.dev/task=fit"):
        assert (
            not pod.spec.scheduling_gates and pod.spec.node_name and pod.status.phase == "Succeeded"
        )
    reasons = [
        e.reason
        for e in cluster.core.list_namespaced_event(
            ns, field_selector="involvedObject.name=fit"
        ).items
    ]
    assert {"Released", "TrainingComplete"} <= set(reasons)
    msg = next(
        e.message for e in cluster.core.list_namespaced_event(ns).items if e.reason == "Released"
    )
    assert msg == "all 2 pods released together"


def test_never_fitting_task_fails_unschedulable_with_numbers(cluster: Any, operator: Any) -> None:
    ns = cluster.namespace("nofit")
    _vset_ready(cluster, ns)
    cluster.apply_task(ns, "huge", file="task-gpu.yaml")  # 2 nodes x 8 GPUs on 4-GPU rigs
    wait_for("Failed", lambda: _status(cluster, ns, "huge").get("phase") == "Failed")
    st = _status(cluster, ns, "huge")
    assert st["reason"] == "Unschedulable"
    assert (
        "8 nvidia.com/gpu" in st["message"]
        and "gpu-rig-0: 4 nvidia.com/gpu allocatable" in st["message"]
    )
    assert cluster.pods(ns, "pot.dev/task=huge") == []


def test_task_that_fits_later_stays_gated_then_starts_together(cluster: Any, operator: Any) -> None:
    ns = cluster.namespace("later")
    _vset_ready(cluster, ns)
    blockers = []
    for rig in ("gpu-rig-0", "gpu-rig-1"):
        body = gpu_holder(f"block-{rig}", rig)
        blockers.append(cluster.core.create_namespaced_pod(ns, body).metadata.name)
    wait_for(
        "blockers running",
        lambda: (
            all(p.status.phase == "Running" for p in cluster.pods(ns))
            and len(cluster.pods(ns)) >= 2 + 4
        ),
    )
    cluster.apply_task(
        ns,
        "later",
        resources={"nodes": 2, "gpusPerNode": 2, "backend": "nccl", "cpu": "1", "memory": "1Gi"},
        hyperparameters__steps=40,
        model__config={"standinSeconds": 0.05},
    )
    wait_for(
        "InsufficientCapacity",
        lambda: _status(cluster, ns, "later").get("reason") == "InsufficientCapacity",
    )
    st = _status(cluster, ns, "later")
    assert st["phase"] == "Scheduling" and "1 of 4 nvidia.com/gpu free" in st["message"]
    time.sleep(1.5)
    pods = cluster.pods(ns, "pot.dev/task=later")
    assert len(pods) == 2 and all(p.spec.scheduling_gates and not p.spec.node_name for p in pods)
    for name in blockers:
        cluster.core.delete_namespaced_pod(name, ns, grace_period_seconds=0)
    wait_for(
        "Verifying", lambda: _status(cluster, ns, "later").get("phase") == "Verifying", timeout=60
    )
    assert {p.spec.node_name for p in cluster.pods(ns, "pot.dev/task=later")} <= {
        "gpu-rig-0",
        "gpu-rig-1",
    }


def test_missing_validator_set_fails_naming_it(cluster: Any, operator: Any) -> None:
    ns = cluster.namespace("novset")
    cluster.apply_task(ns, "orphan")
    wait_for("Failed", lambda: _status(cluster, ns, "orphan").get("phase") == "Failed")
    st = _status(cluster, ns, "orphan")
    assert st["reason"] == "ValidatorSetNotFound" and 'ValidatorSet "vset"' in st["message"]
    assert cluster.pods(ns) == []


def test_backoff_limit_exhausted_fails_with_reason(cluster: Any, operator: Any) -> None:
    ns = cluster.namespace("crashy")
    _vset_ready(cluster, ns)
    cluster.apply_task(
        ns, "crashy", model__config={"standinFail": True}, runPolicy={"backoffLimit": 1}
    )
    wait_for("Failed", lambda: _status(cluster, ns, "crashy").get("phase") == "Failed", timeout=90)
    st = _status(cluster, ns, "crashy")
    assert st["reason"] == "BackoffLimitExceeded" and st["restarts"] == 1
    assert "backoffLimit=1" in st["message"] and "exited with code 1" in st["message"]
    events = [
        e.reason
        for e in cluster.core.list_namespaced_event(
            ns, field_selector="involvedObject.name=crashy"
        ).items
    ]
    assert "GangRestarting" in events and "BackoffLimitExceeded" in events


def test_node_failure_restarts_gang_from_last_checkpoint(cluster: Any, operator: Any) -> None:
    ns = cluster.namespace("nodefail")
    _vset_ready(cluster, ns)
    cluster.apply_task(
        ns, "resume", hyperparameters__steps=200, model__config={"standinSeconds": 0.05}
    )
    wait_for(
        "Training", lambda: _status(cluster, ns, "resume").get("phase") == "Training", timeout=60
    )
    pod1 = cluster.core.read_namespaced_pod("resume-node-1", ns)
    rig = pod1.spec.node_name
    # Rank 1's node-local state (hostPath, keyed by the task's UID).
    host_dir = Path(standin_env(KUBECONFIG=str(cluster.kubeconfig))["POT_TRAINER_STORE_HOST_DIR"])
    store = host_dir / cluster.task(ns, "resume")["metadata"]["uid"] / "rank-1"
    wait_for(
        "a checkpoint",
        lambda: (store / "checkpoint").exists() and int((store / "checkpoint").read_text()) >= 20,
    )
    cluster.kubectl("annotate", "node", rig, "localcluster.pot.dev/failed=true", "--overwrite")
    try:
        wait_for(
            "gang restart", lambda: _status(cluster, ns, "resume").get("restarts") == 1, timeout=60
        )
        wait_for(
            "Verifying",
            lambda: _status(cluster, ns, "resume").get("phase") == "Verifying",
            timeout=90,
        )
    finally:
        cluster.kubectl("annotate", "node", rig, "localcluster.pot.dev/failed-")
    _dump(cluster, ns)
    starts = (store / "starts").read_text().split()
    assert starts[0] == "0:0" and starts[1].startswith("1:") and int(starts[1][2:]) >= 20, starts
    assert int((store / "checkpoint").read_text()) == 200


def _dump(cluster: Any, ns: str) -> None:
    with open("/tmp/nodefail.txt", "w") as fh:
        for e in sorted(
            cluster.core.list_namespaced_event(ns).items, key=lambda e: str(e.last_timestamp)
        ):
            fh.write(f"{e.last_timestamp} {e.involved_object.name} {e.reason} {e.message}\n")


def test_volcano_queued_task_gets_a_podgroup_and_no_gate(cluster: Any, operator: Any) -> None:
    ns = cluster.namespace("volcano")
    cluster.kubectl(
        "apply", "-f", str(Path(__file__).parent / "fixtures" / "volcano-podgroup-crd.yaml")
    )
    _vset_ready(cluster, ns)
    cluster.apply_task(
        ns,
        "vq",
        annotations={"scheduling.volcano.sh/queue-name": "farm"},
        hyperparameters__steps=40,
    )
    group = wait_for(
        "PodGroup",
        lambda: cluster.custom.get_namespaced_custom_object(
            "scheduling.volcano.sh", "v1beta1", ns, "podgroups", "vq-0"
        ),
    )
    assert group["spec"] == {
        "minMember": 2,
        "minResources": {"cpu": "2", "memory": "2Gi"},
        "queue": "farm",
    }
    assert group["metadata"]["ownerReferences"][0]["name"] == "vq"
    pods = wait_for(
        "two pods", lambda: p if len(p := cluster.pods(ns, "pot.dev/task=vq")) == 2 else None
    )
    for pod in pods:
        assert pod.spec.scheduler_name == "volcano" and not pod.spec.scheduling_gates
        assert pod.metadata.annotations["scheduling.k8s.io/group-name"] == "vq-0"
    # No Volcano scheduler runs here: the gang honestly waits for its admission.
    wait_for("Queued", lambda: _status(cluster, ns, "vq").get("reason") == "Queued")
    assert all(not p.spec.node_name for p in cluster.pods(ns, "pot.dev/task=vq"))


def test_two_gangs_wanting_the_same_gpus_are_never_both_released(
    cluster: Any, operator: Any
) -> None:
    """Created together, each wanting every GPU of both rigs: one runs, the other
    waits gated until it is done. Counting only bound pods released both, and the
    second gang sat unschedulable on capacity the first already held."""
    ns = cluster.namespace("compete")
    _vset_ready(cluster, ns)
    whole = {"nodes": 2, "gpusPerNode": 4, "backend": "nccl", "cpu": "1", "memory": "1Gi"}
    for name in ("first", "second"):
        cluster.apply_task(
            ns,
            name,
            resources=whole,
            hyperparameters__steps=40,
            model__config={"standinSeconds": 0.05},
        )
    for name in ("first", "second"):
        wait_for(
            f"{name} Verifying",
            lambda n=name: _status(cluster, ns, n).get("phase") == "Verifying",
            timeout=90,
        )
    events = cluster.core.list_namespaced_event(ns).items
    waited = {e.involved_object.name for e in events if e.reason == "InsufficientCapacity"}
    assert len(waited) == 1, waited
    unplaced = [e.message for e in events if e.reason == "FailedScheduling"]
    assert unplaced == []  # no released pod ever found its room taken
