"""The operator told to watch one namespace (POT_WATCH_NAMESPACES, kopf ``-n``) on the
local cluster, under kopf's KopfRunner: it counts the GPUs that pods in *other*
namespaces hold (usage_watching's cluster-wide, read-only pod watch), so a gang is
never released onto them, and it acts in its own namespace only.

Before that watch, the operator saw only its namespace's pods: the gang below was
released onto GPUs a pod elsewhere held, sat unschedulable, timed out after
POT_GANG_TIMEOUT, was gated again and released again."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import gpu_holder, kopf_operator, standin_env, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
ROOT = Path(__file__).resolve().parents[2]
WATCHED, OTHER = "watched", "other"


def _blocker(cluster: Any, rig: str) -> str:
    """A pod in the unwatched namespace holding 3 of ``rig``'s 4 GPUs, running."""
    body = gpu_holder(f"miner-{rig}", rig)
    name = str(cluster.core.create_namespaced_pod(OTHER, body).metadata.name)
    wait_for(
        f"{name} running",
        lambda: cluster.core.read_namespaced_pod(name, OTHER).status.phase == "Running",
    )
    return name


def _status(cluster: Any, ns: str, name: str) -> dict[str, Any]:
    return cluster.task(ns, name).get("status") or {}


def test_gpus_held_in_unwatched_namespaces_keep_the_gang_gated(cluster: Any) -> None:
    cluster.namespace(WATCHED)
    cluster.namespace(OTHER)
    # One blocker before the operator starts (its startup listing must see it), one
    # after (its watch must).
    blockers = [_blocker(cluster, "gpu-rig-0")]
    env = standin_env(KUBECONFIG=str(cluster.kubeconfig), POT_WATCH_NAMESPACES=WATCHED)
    with contextlib.contextmanager(kopf_operator)(env, (WATCHED,)):
        blockers.append(_blocker(cluster, "gpu-rig-1"))
        cluster.kubectl("apply", "-n", WATCHED, "-f", str(ROOT / "examples" / "validatorset.yaml"))
        wait_for(
            "ValidatorSet Ready",
            lambda: (cluster.vset(WATCHED).get("status") or {}).get("phase") == "Ready",
        )
        two_gpus = {"nodes": 2, "gpusPerNode": 2, "backend": "nccl", "cpu": "1", "memory": "1Gi"}
        for ns in (WATCHED, OTHER):
            cluster.apply_task(
                ns,
                "gang",
                resources=two_gpus,
                hyperparameters__steps=40,
                model__config={"standinSeconds": 0.05},
            )
        wait_for(
            "InsufficientCapacity",
            lambda: _status(cluster, WATCHED, "gang").get("reason") == "InsufficientCapacity",
        )
        st = _status(cluster, WATCHED, "gang")
        assert st["phase"] == "Scheduling", st
        for rig in ("gpu-rig-0", "gpu-rig-1"):
            assert f"{rig}: 1 of 4 nvidia.com/gpu free" in st["message"], st["message"]
        time.sleep(2)  # long enough for a wrong release to show
        pods = cluster.pods(WATCHED, "pot.dev/task=gang")
        assert len(pods) == 2
        assert all(p.spec.scheduling_gates and not p.spec.node_name for p in pods)
        events = cluster.core.list_namespaced_event(
            WATCHED, field_selector="involvedObject.name=gang"
        ).items
        waited = [e.message for e in events if e.reason == "InsufficientCapacity"]
        assert waited and "1 of 4 nvidia.com/gpu free" in waited[0], waited
        assert not [e for e in events if e.reason == "Released"]

        for name in blockers:
            cluster.core.delete_namespaced_pod(name, OTHER, grace_period_seconds=0)
        wait_for(
            "Verifying",
            lambda: _status(cluster, WATCHED, "gang").get("phase") == "Verifying",
            timeout=90,
        )
        unplaced = [
            e.message
            for e in cluster.core.list_namespaced_event(WATCHED).items
            if e.reason == "FailedScheduling"
        ]
        assert unplaced == []  # released once, onto free GPUs: never stuck, never regated
        # The task in the unwatched namespace was never touched.
        assert "status" not in cluster.task(OTHER, "gang")
        assert cluster.pods(OTHER, "pot.dev/task=gang") == []
