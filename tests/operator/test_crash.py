"""kill -9 of the operator at 20 seeded random points: never a duplicate, always consistent.

The operator runs as ``python -m pot.operator`` (a real process, so SIGKILL is
real); tasks are created while it starts and reconciles, so the kills land
inside reconciles: between a status write and the pod creates, between two
creates, between two gate releases. After every kill the cluster must hold
at most one pod per (task, rank), no pod of an attempt other than the task's
current one once it settles, no pod without its task; after the last restart
every task must finish without a single spurious gang restart.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from .conftest import standin_env, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
ROOT = Path(__file__).resolve().parents[2]
SEED = 8
KILLS = 20


def _start(cluster: Any, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **standin_env(KUBECONFIG=str(cluster.kubeconfig), POT_WORKERS="4")}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pot.operator"], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _invariants(cluster: Any, ns: str, tasks: set[str]) -> None:
    pods = [p for p in cluster.pods(ns, "pot.dev/task") if not p.metadata.deletion_timestamp]
    per_rank = Counter(
        (p.metadata.labels["pot.dev/task"], p.metadata.labels["pot.dev/node-rank"]) for p in pods
    )
    assert all(n == 1 for n in per_rank.values()), per_rank
    for pod in pods:
        task = pod.metadata.labels["pot.dev/task"]
        assert task in tasks, f"orphan pod {pod.metadata.name}"
        (ref,) = pod.metadata.owner_references
        assert ref.kind == "TrainingTask" and ref.name == task
    services = Counter(s.metadata.name for s in cluster.core.list_namespaced_service(ns).items)
    assert all(n == 1 for n in services.values())


def test_operator_killed_at_random_points_stays_consistent(cluster: Any, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    ns = cluster.namespace("crash")
    log = tmp_path / "operator.log"
    proc = _start(cluster, log)
    try:
        cluster.kubectl("apply", "-n", ns, "-f", str(ROOT / "examples" / "validatorset.yaml"))
        wait_for(
            "ValidatorSet Ready",
            lambda: (cluster.vset(ns).get("status") or {}).get("phase") == "Ready",
            timeout=90,
        )
    finally:
        proc.kill()
        proc.wait()
    tasks: set[str] = set()
    seen: Counter[tuple[str, int, int]] = (
        Counter()
    )  # (phase, pods, gated) of the newest task at each kill
    for i in range(KILLS):
        proc = _start(cluster, log)
        name = f"t{i}"
        cluster.apply_task(
            ns, name, hyperparameters__steps=30, model__config={"standinSeconds": 0.05}
        )
        tasks.add(name)
        # The operator's imports and kopf's startup take about 0.5-1 s (0.4 s less since it
        # stopped importing eth_account): kill from before its first reconcile to after it.
        time.sleep(rng.uniform(0.3, 2.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _invariants(cluster, ns, tasks)
        pods = cluster.pods(ns, f"pot.dev/task={name}")
        phase = (cluster.task(ns, name).get("status") or {}).get("phase", "-")
        seen[(phase, len(pods), sum(1 for p in pods if p.spec.scheduling_gates))] += 1
    (tmp_path / "kill-points.txt").write_text(repr(sorted(seen.items())))
    # The kills landed at different points of the newest task's reconciles.
    assert len(seen) >= 3, seen
    proc = _start(cluster, log)
    try:
        for name in sorted(tasks):
            wait_for(
                f"{name} done",
                lambda n=name: cluster.task(ns, n).get("status", {}).get("phase") == "Verifying",
                timeout=120,
            )
        _invariants(cluster, ns, tasks)
        for name in sorted(tasks):
            st = cluster.task(ns, name)["status"]
            assert st.get("restarts", 0) == 0, (name, st)  # a crashed operator is not a failed gang
            pods = cluster.pods(ns, f"pot.dev/task={name}")
            assert sorted(p.metadata.name for p in pods) == [f"{name}-node-0", f"{name}-node-1"]
            assert {p.metadata.labels["pot.dev/attempt"] for p in pods} == {"0"}
        # Trainer state is node-local (hostPath, the default): no claim, no
        # ConfigMap per task, so nothing of that kind to leak or duplicate.
        for listing in (
            cluster.core.list_namespaced_persistent_volume_claim,
            cluster.core.list_namespaced_config_map,
        ):
            assert not listing(ns, label_selector="pot.dev/task").items
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
