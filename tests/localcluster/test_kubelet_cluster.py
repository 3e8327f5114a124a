"""The local cluster running real pods, driven through the real kubectl (issue 4
"Must show"), part 1: nodes, workloads, scheduling, virtual nodes, failures and
the control plane's own life. Pod internals (volumes, logs, exec, probes,
lifecycle) are in test_kubelet_pods.py; restarts of the kubelet and the API server
in test_kubelet_restarts.py.

One cluster for the whole module (kubelet_kit). The last test runs `down` and
checks that no process, network namespace or bridge is left.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pot.localcluster import launching, podnet

from .conftest import Cluster
from .kubelet_kit import (
    COMPONENT,
    _ready_nodes,
    apply,
    pod,
    running_ready,
    start_cluster,
    wait_for,
    wait_running,
)

pytestmark = [
    pytest.mark.slow,
    # launching.up drops the Popen objects of the processes it leaves running
    # in the background (on purpose: `pot local up` returns); not a leak.
    pytest.mark.filterwarnings("ignore:subprocess .* is still running:ResourceWarning"),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from start_cluster(tmp_path_factory)


def test_nodes_look_like_gpu_rigs(cluster: Cluster) -> None:
    node = json.loads(cluster.kubectl("get", "node", "gpu-rig-0", "-o", "json").stdout)
    labels = node["metadata"]["labels"]
    assert labels["nvidia.com/gpu.present"] == "true" and labels["nvidia.com/gpu.count"] == "4"
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "4"
    assert cluster.kubectl(
        "get", "nodes", "-l", "nvidia.com/gpu.present=true", "-o", "name"
    ).stdout.split() == ["node/gpu-rig-0", "node/gpu-rig-1", "node/kwok-0"]


STS = """
apiVersion: v1
kind: Service
metadata: {name: web-peers}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: http, port: 8000}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web-peers
  replicas: 4
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: srv
        image: python:3.11
        command: ["python", "-m", "http.server", "8000"]
        readinessProbe: {tcpSocket: {port: 8000}, periodSeconds: 1}
"""

REACH_ALL = """
import urllib.request
for i in range(4):
    url = f"http://web-{i}.web-peers.default.svc.cluster.local:8000/"
    assert urllib.request.urlopen(url, timeout=5).status == 200, url
print("reached", 4)
"""


def reach_all(c: Cluster, name: str) -> None:
    wait_for(
        lambda: (
            "reached 4"
            in c.kubectl("exec", name, "--", "python", "-c", REACH_ALL, check=False).stdout
        ),
        20,
        f"{name} reaching every member by DNS name",
    )


def test_statefulset_members_reach_each_other_by_dns_and_come_back(cluster: Cluster) -> None:
    apply(cluster, STS)
    wait_for(
        lambda: all(running_ready(cluster, f"web-{i}") for i in range(4)), 60, "4 ready members"
    )
    ips = {pod(cluster, f"web-{i}")["status"]["podIP"] for i in range(4)}
    assert len(ips) == 4, "each pod has its own IP"
    for i in range(4):
        # Every member binds 0.0.0.0:8000 in its own namespace: no collision.
        # DNS follows readiness through Endpoints, a moment later (as on a real cluster).
        reach_all(cluster, f"web-{i}")
    old_uid = pod(cluster, "web-2")["metadata"]["uid"]
    cluster.kubectl("delete", "pod", "web-2", "--wait=false")
    wait_for(
        lambda: (
            pod(cluster, "web-2")["metadata"]["uid"] != old_uid and running_ready(cluster, "web-2")
        ),
        60,
        "web-2 recreated",
    )
    reach_all(cluster, "web-0")


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: c, image: pot-operator, command: [sleep, "300"]}
"""


def test_rolling_updates_through_kubectl_rollout(cluster: Cluster) -> None:
    apply(cluster, DEPLOYMENT)
    cluster.kubectl("rollout", "status", "deploy/api", "--timeout=60s", timeout=90)
    cluster.kubectl("set", "env", "deploy/api", "GENERATION=2")
    cluster.kubectl("rollout", "status", "deploy/api", "--timeout=60s", timeout=90)
    pods = json.loads(cluster.kubectl("get", "pods", "-l", "app=api", "-o", "json").stdout)["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert len(live) == 2
    assert all(
        c.get("env") == [{"name": "GENERATION", "value": "2"}]
        for p in live
        for c in p["spec"]["containers"]
    )
    cluster.kubectl("delete", "deploy", "api")

    before = {pod(cluster, f"web-{i}")["metadata"]["uid"] for i in range(4)}
    cluster.kubectl("set", "env", "sts/web", "GENERATION=2")
    cluster.kubectl("rollout", "status", "sts/web", "--timeout=90s", timeout=120)
    after = {i: pod(cluster, f"web-{i}") for i in range(4)}
    assert not before & {p["metadata"]["uid"] for p in after.values()}, "every member replaced"
    assert all(
        p["spec"]["containers"][0]["env"] == [{"name": "GENERATION", "value": "2"}]
        for p in after.values()
    )
    reach_all(cluster, "web-3")


def test_scheduling_gpus_gates_and_node_selector(cluster: Cluster) -> None:
    apply(
        cluster,
        """
apiVersion: v1
kind: Pod
metadata: {name: greedy}
spec:
  containers:
  - {name: c, image: pot-trainer, resources: {limits: {nvidia.com/gpu: 5}}}
---
apiVersion: v1
kind: Pod
metadata: {name: gated}
spec:
  schedulingGates: [{name: pot.dev/wait}]
  containers:
  - {name: c, image: busybox, command: [sleep, "300"]}
---
apiVersion: v1
kind: Pod
metadata: {name: pinned}
spec:
  nodeSelector: {kubernetes.io/hostname: gpu-rig-1}
  containers:
  - {name: c, image: busybox, command: [sleep, "300"], resources: {limits: {nvidia.com/gpu: 2}}}
""",
    )

    def failed_scheduling() -> str:
        events = json.loads(cluster.kubectl("get", "events", "-o", "json").stdout)["items"]
        return next(
            e["message"]
            for e in events
            if e["reason"] == "FailedScheduling" and e["involvedObject"]["name"] == "greedy"
        )

    message = wait_for(failed_scheduling, 20, "FailedScheduling")
    assert message.startswith("0/3 nodes are available:")
    assert "2 Insufficient nvidia.com/gpu" in message
    greedy = pod(cluster, "greedy")
    cond = next(c for c in greedy["status"]["conditions"] if c["type"] == "PodScheduled")
    assert (
        greedy["status"]["phase"] == "Pending"
        and cond["status"] == "False"
        and cond["reason"] == "Unschedulable"
    )
    assert "FailedScheduling" in cluster.kubectl("describe", "pod", "greedy").stdout

    wait_for(
        lambda: pod(cluster, "pinned")["spec"].get("nodeName") == "gpu-rig-1", 20, "pinned bound"
    )
    wait_running(cluster, "pinned")

    table = wait_for(
        lambda: "SchedulingGated" in (t := cluster.kubectl("get", "pod", "gated").stdout) and t,
        20,
        "gated",
    )
    assert "SchedulingGated" in table
    time.sleep(1.5)
    assert not pod(cluster, "gated")["spec"].get("nodeName")
    cluster.kubectl(
        "patch",
        "pod",
        "gated",
        "--type=json",
        "-p",
        '[{"op": "remove", "path": "/spec/schedulingGates"}]',
    )
    wait_running(cluster, "gated")
    conds = {c["type"]: c for c in pod(cluster, "gated")["status"]["conditions"]}
    assert conds["PodScheduled"]["status"] == "True"  # no stale SchedulingGated once bound
    wait_for(
        lambda: "Running" in cluster.kubectl("get", "pod", "gated").stdout, what="STATUS Running"
    )
    cluster.kubectl("delete", "pod", "greedy", "gated", "pinned", "--wait=false")


def test_virtual_node_runs_pods_without_processes(cluster: Cluster) -> None:
    apply(
        cluster,
        """
apiVersion: apps/v1
kind: Deployment
metadata: {name: fleet}
spec:
  replicas: 70
  selector: {matchLabels: {app: fleet}}
  template:
    metadata: {labels: {app: fleet}}
    spec:
      nodeSelector: {type: kwok}
      tolerations: [{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}]
      containers: [{name: c, image: nginx:1.27}]
""",
    )

    def fleet() -> list[dict[str, Any]]:
        out = cluster.kubectl("get", "pods", "-l", "app=fleet", "-o", "json").stdout
        return list(json.loads(out)["items"])

    def all_running(n: int) -> bool:
        items = fleet()
        return len(items) == n and all(p["status"].get("phase") == "Running" for p in items)

    def distinct_ips() -> bool:
        # Each virtual pod its own address (all of a status batch once shared one).
        ips = [
            p["status"].get("podIP") for p in fleet() if not p["metadata"].get("deletionTimestamp")
        ]
        return len(set(ips)) == len(ips)

    wait_for(lambda: all_running(70), 60, "70 virtual pods Running")
    assert distinct_ips()
    wait_for(
        lambda: (
            json.loads(cluster.kubectl("get", "deploy", "fleet", "-o", "json").stdout)[
                "status"
            ].get("readyReplicas")
            == 70
        ),
        30,
        "deployment ready",
    )
    cluster.kubectl("scale", "deploy", "fleet", "--replicas=2")
    wait_for(
        lambda: (
            len(cluster.kubectl("get", "pods", "-l", "app=fleet", "-o", "name").stdout.split()) == 2
        ),
        30,
        "scaled down",
    )
    cluster.kubectl("scale", "deploy", "fleet", "--replicas=5")
    wait_for(lambda: all_running(5), 30, "scaled up again")
    assert distinct_ips()
    cluster.kubectl("delete", "deploy", "fleet")


def test_job_runs_to_completion(cluster: Cluster) -> None:
    apply(
        cluster,
        """
apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: c, image: pot-trainer, command: [python, -c, "print('done')"]}]
""",
    )
    cluster.kubectl("wait", "--for=condition=Complete", "job/once", "--timeout=40s", timeout=60)
    assert cluster.kubectl("logs", "job/once").stdout == "done\n"


def pot_local(*args: str) -> str:
    """Run `pot local ARGS` as a user would."""
    pot = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "pot"
    proc = subprocess.run(
        [str(pot), "local", *args], check=False, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_node_failure_evicts_pods_and_recovery(cluster: Cluster) -> None:
    apply(
        cluster,
        """
apiVersion: v1
kind: Pod
metadata: {name: victim}
spec:
  nodeSelector: {kubernetes.io/hostname: gpu-rig-1}
  containers: [{name: c, image: busybox, command: [sleep, "300"]}]
""",
    )
    wait_running(cluster, "victim")
    pid = int(
        pod(cluster, "victim")["status"]["containerStatuses"][0]["containerID"].rsplit("/", 1)[1]
    )
    uid = pod(cluster, "victim")["metadata"]["uid"]
    victim_dir = cluster.directory / "kubelet" / "pods" / f"default_victim_{uid[:8]}"
    assert victim_dir.is_dir()
    pot_local("node", "fail", "gpu-rig-1", "--dir", str(cluster.directory))
    wait_for(
        lambda: not os.path.exists(f"/proc/{pid}"), 10, "victim's process killed with its node"
    )
    wait_for(
        lambda: "NotReady" in cluster.kubectl("get", "node", "gpu-rig-1").stdout, 20, "NotReady"
    )
    wait_for(
        lambda: "victim" not in cluster.kubectl("get", "pods", "-o", "name").stdout,
        30,
        "victim evicted",
    )
    events = cluster.kubectl("get", "events", "-o", "json").stdout
    assert "TaintManagerEviction" in events
    # The StatefulSet's members that were on the failed rig come back on the healthy one.
    wait_for(
        lambda: all(running_ready(cluster, f"web-{i}") for i in range(4)), 60, "web members back"
    )
    assert {pod(cluster, f"web-{i}")["spec"]["nodeName"] for i in range(4)} == {"gpu-rig-0"}
    pot_local("node", "recover", "gpu-rig-1", "--dir", str(cluster.directory))
    wait_for(lambda: "gpu-rig-1" in _ready_nodes(cluster), 20, "node recovered")
    # Back up, the rig drops what its evicted pods left (logs, emptyDirs).
    wait_for(lambda: not victim_dir.exists(), 10, "the evicted pod's directory removed")


def _container_pids(c: Cluster) -> set[int]:
    return {
        int(st["containerID"].rsplit("/", 1)[1])
        for i in range(4)
        for st in pod(c, f"web-{i}")["status"]["containerStatuses"]
        if "running" in st["state"]
    }


def test_crashed_control_plane_is_restarted_by_up_and_cleans_up(cluster: Cluster) -> None:
    before = _container_pids(cluster)
    assert len(before) == 4
    restarts = {
        i: pod(cluster, f"web-{i}")["status"]["containerStatuses"][0]["restartCount"]
        for i in range(4)
    }
    pid = launching.status(cluster.directory).running["controlplane"]
    os.kill(pid, 9)
    wait_for(
        lambda: "controlplane" not in launching.status(cluster.directory).running,
        10,
        "control plane dead",
    )
    assert all(os.path.exists(f"/proc/{p}") for p in before), "containers outlive a crashed kubelet"
    _, already = launching.up(cluster.directory, components=COMPONENT)
    assert already and "controlplane" in launching.status(cluster.directory).running
    wait_for(lambda: not any(os.path.exists(f"/proc/{p}") for p in before), 20, "leftovers killed")

    def counts() -> dict[int, int]:
        return {
            i: pod(cluster, f"web-{i}")["status"]["containerStatuses"][0]["restartCount"]
            for i in range(4)
        }

    def rerun() -> bool:
        # At least one restart each; a loaded machine may add another (the restarted kubelet
        # is within its rights to retry a container that failed to start), never none.
        now = counts()
        return all(running_ready(cluster, f"web-{i}") and now[i] > restarts[i] for i in range(4))

    # Generous: under a loaded CI machine the restarted kubelet's back-off can stretch this.
    try:
        wait_for(rerun, 120, "pods run again, counted as restarts")
    except AssertionError as exc:
        try:
            final: object = counts()
        except (KeyError, IndexError) as missing:
            final = missing
        raise AssertionError(f"{exc}; restart counts were {restarts}, now {final!r}") from exc
    tag = podnet.tag(cluster.directory)
    from pot.localcluster import containers

    assert len(containers.marked_pids(tag)) == 4, "exactly one process per container, no duplicates"
    reach_all(cluster, "web-1")


def test_down_leaves_no_process_namespace_or_bridge(cluster: Cluster) -> None:
    pids = [
        int(c["containerID"].rsplit("/", 1)[1])
        for i in range(4)
        for c in pod(cluster, f"web-{i}")["status"]["containerStatuses"]
    ]
    assert all(os.path.exists(f"/proc/{p}") for p in pids)
    launching.down(cluster.directory)
    tag = podnet.tag(cluster.directory)
    ps = subprocess.run(
        ["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True
    ).stdout
    leftovers = [line for line in ps.splitlines() if str(cluster.directory) in line]
    assert leftovers == [], leftovers
    assert not any(os.path.exists(f"/proc/{p}") for p in pids)
    assert podnet.leftover_namespaces(tag) == []
    assert not Path(f"/sys/class/net/pb{tag}").exists()
    with pytest.raises(OSError):
        urllib.request.urlopen(cluster.url + "/readyz", timeout=1)
