"""The local cluster across restarts of its own processes, driven through the real kubectl:
a restarted kubelet honours restartPolicy and keeps serving finished pods, and pods outlive
an API server crash. (Split from test_kubelet_cluster.py, on a cluster of its own.)
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pot.localcluster import launching

from .conftest import Cluster
from .kubelet_kit import COMPONENT, apply, pod, start_cluster, wait_for, wait_running

pytestmark = [
    pytest.mark.slow,
    # launching.up drops the Popen objects of the processes it leaves running
    # in the background (on purpose: `pot local up` returns); not a leak.
    pytest.mark.filterwarnings("ignore:subprocess .* is still running:ResourceWarning"),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from start_cluster(tmp_path_factory)


def _crash_and_restart_control_plane(c: Cluster) -> None:
    pid = launching.status(c.directory).running["controlplane"]
    os.kill(pid, 9)
    wait_for(
        lambda: "controlplane" not in launching.status(c.directory).running,
        10,
        "control plane dead",
    )
    launching.up(c.directory, components=COMPONENT)


def test_restarted_kubelet_runs_nothing_the_restart_policy_forbids(
    cluster: Cluster, tmp_path: Path
) -> None:
    # A restarted kubelet runs pods again, but not a restartPolicy Never pod's containers (the
    # operator's gangs: a member that silently reran would rejoin a dead rendezvous) nor an
    # OnFailure container that had completed: as on Kubernetes when a sandbox is lost, the
    # Never pod fails (ContainerStatusUnknown, 137) and its owner decides.
    runs = tmp_path / "runs"
    apply(
        cluster,
        f"""
apiVersion: v1
kind: Pod
metadata: {{name: gang-member}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: c, image: x, command: [sh, -c, "echo never >> {runs}; exec sleep 600"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: half-done}}
spec:
  restartPolicy: OnFailure
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: done, image: x, command: [sh, -c, "echo onfailure >> {runs}"]}}
  - {{name: serving, image: x, command: [sleep, "600"]}}
""",
    )

    def states(name: str) -> dict[str, dict[str, Any]]:
        return {s["name"]: s for s in pod(cluster, name)["status"]["containerStatuses"]}

    wait_for(
        lambda: (
            "running" in states("gang-member")["c"]["state"]
            and "terminated" in states("half-done")["done"]["state"]
            and "running" in states("half-done")["serving"]["state"]
        ),
        30,
        "both pods started",
    )
    _crash_and_restart_control_plane(cluster)
    wait_for(lambda: pod(cluster, "gang-member")["status"]["phase"] == "Failed", 30, "Failed")
    member = states("gang-member")["c"]
    assert member["restartCount"] == 0, member
    assert member["state"]["terminated"]["reason"] == "ContainerStatusUnknown", member
    assert member["state"]["terminated"]["exitCode"] == 137, member
    wait_for(
        lambda: (
            states("half-done")["serving"]["restartCount"] == 1
            and "running" in states("half-done")["serving"]["state"]
        ),
        30,
        "serving run again",
    )
    done = states("half-done")["done"]
    assert done["restartCount"] == 0, done
    assert done["state"]["terminated"]["exitCode"] == 0, done
    assert sorted(runs.read_text().split()) == ["never", "onfailure"]
    cluster.kubectl("delete", "pod", "gang-member", "half-done", "--wait=true", timeout=60)


def test_restarted_kubelet_serves_finished_pods_and_drops_deleted_ones(cluster: Cluster) -> None:
    # A pod that finished under the previous kubelet keeps its logs (kubectl logs answered
    # "not running on this kubelet") and its directory goes when it is deleted; a pod deleted
    # while no kubelet ran leaves no directory (its emptyDir could hold gigabytes).
    apply(
        cluster,
        """
apiVersion: v1
kind: Pod
metadata: {name: finished}
spec:
  restartPolicy: Never
  containers: [{name: c, image: x, command: [sh, -c, "echo bye"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: doomed}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: x, command: [sleep, "600"]}]
""",
    )
    wait_for(lambda: pod(cluster, "finished")["status"].get("phase") == "Succeeded", 30, "done")
    wait_running(cluster, "doomed")
    uids = {name: pod(cluster, name)["metadata"]["uid"][:8] for name in ("finished", "doomed")}
    pods_dir = cluster.directory / "kubelet" / "pods"

    def pod_dir(name: str) -> Path:
        return pods_dir / f"default_{name}_{uids[name]}"

    assert pod_dir("finished").is_dir() and pod_dir("doomed").is_dir()
    pid = launching.status(cluster.directory).running["controlplane"]
    os.kill(pid, 9)
    wait_for(lambda: "controlplane" not in launching.status(cluster.directory).running, 10, "dead")
    cluster.kubectl("delete", "pod", "doomed", "--force", "--grace-period=0")
    launching.up(cluster.directory, components=COMPONENT)
    wait_for(lambda: not pod_dir("doomed").exists(), 30, "the deleted pod's directory removed")
    wait_for(lambda: cluster.kubectl("logs", "finished").stdout == "bye\n", 30, "logs served")
    assert pod(cluster, "finished")["status"]["phase"] == "Succeeded"
    cluster.kubectl("delete", "pod", "finished", "--wait=true", timeout=60)
    wait_for(lambda: not pod_dir("finished").exists(), 10, "the finished pod's directory removed")


def test_pods_outlive_an_api_server_crash(cluster: Cluster) -> None:
    # `up` after the API server died starts it again and leaves the control plane alone: pods
    # keep running (all were killed and rerun), and a status the kubelet could not write
    # meanwhile (a pod that finished) reaches the API server once it is back.
    apply(
        cluster,
        """
apiVersion: v1
kind: Pod
metadata: {name: survivor}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: x, command: [sleep, "600"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: finisher}
spec:
  restartPolicy: Never
  containers: [{name: c, image: x, command: [sh, -c, "sleep 3"]}]
""",
    )
    wait_running(cluster, "survivor")
    wait_running(cluster, "finisher")
    before = pod(cluster, "survivor")["status"]["containerStatuses"][0]["containerID"]
    running = launching.status(cluster.directory).running
    os.kill(running["apiserver"], 9)
    wait_for(lambda: "apiserver" not in launching.status(cluster.directory).running, 10, "API down")
    time.sleep(4)  # finisher ends while no API server listens
    launching.up(cluster.directory, components=COMPONENT)
    assert launching.status(cluster.directory).running["controlplane"] == running["controlplane"]
    wait_for(lambda: pod(cluster, "finisher")["status"]["phase"] == "Succeeded", 30, "Succeeded")
    wait_running(cluster, "survivor")
    after = pod(cluster, "survivor")["status"]["containerStatuses"][0]
    assert after["containerID"] == before and after["restartCount"] == 0, after
    assert os.path.exists(f"/proc/{before.rsplit('/', 1)[1]}")
    cluster.kubectl("delete", "pod", "survivor", "finisher", "--wait=true", timeout=60)
