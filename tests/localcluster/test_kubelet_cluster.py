"""The local cluster running real pods, driven through the real kubectl (issue 4 "Must show").

One cluster for the whole module (API server + control plane as `pot local up`
starts them, with shortened back-off and eviction timings), a node layout of
two 4-GPU rigs and one tainted virtual node. The last test runs `down` and
checks that no process, network namespace or bridge is left.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pot.localcluster import controlplane, launching, podnet

from .conftest import Cluster

pytestmark = [
    pytest.mark.slow,
    # launching.up drops the Popen objects of the processes it leaves running
    # in the background (on purpose: `pot local up` returns); not a leak.
    pytest.mark.filterwarnings("ignore:subprocess .* is still running:ResourceWarning"),
]

LAYOUT = """
nodes:
- {name: gpu-rig-0, gpus: 4}
- {name: gpu-rig-1, gpus: 4}
- name: kwok-0
  gpus: 8
  virtual: true
  taints: [{key: kwok.x-k8s.io/node, value: fake, effect: NoSchedule}]
"""


def wait_for(check: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (AssertionError, KeyError, IndexError, ValueError, json.JSONDecodeError) as exc:
            last = exc
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


COMPONENT: list[launching.Component] = []


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    directory = tmp_path_factory.mktemp("kubelet")
    (directory / "nodes.yaml").write_text(LAYOUT)
    controlplane.install_layout(directory.resolve(), directory / "nodes.yaml")
    fast = [
        "--heartbeat",
        "1",
        "--node-grace",
        "5",
        "--eviction-timeout",
        "2",
        "--backoff-base",
        "1",
        "--backoff-max",
        "4",
    ]
    comp = launching.Component(
        "controlplane",
        "pot.localcluster.controlplane",
        extra=lambda d: ["--dir", str(d), *fast],
        cleanup=controlplane.cleanup,
    )
    COMPONENT[:] = [comp]
    kubeconfig, _ = launching.up(directory, components=[comp])
    gc.collect()  # the Popen objects `up` let go of, while the warning filter applies
    st = launching.status(directory)
    assert st.url is not None
    c = Cluster(directory, kubeconfig, st.url)
    try:
        wait_for(lambda: len(_ready_nodes(c)) == 3, 30, "3 Ready nodes")
        yield c
    finally:
        launching.down(directory)


def _ready_nodes(c: Cluster) -> list[str]:
    doc = json.loads(c.kubectl("get", "nodes", "-o", "json").stdout)
    return [
        n["metadata"]["name"]
        for n in doc["items"]
        if any(
            x["type"] == "Ready" and x["status"] == "True"
            for x in n.get("status", {}).get("conditions", [])
        )
    ]


def pod(c: Cluster, name: str) -> dict[str, Any]:
    return json.loads(c.kubectl("get", "pod", name, "-o", "json").stdout)


def running_ready(c: Cluster, name: str) -> bool:
    p = pod(c, name)
    ready = any(
        x["type"] == "Ready" and x["status"] == "True" for x in p["status"].get("conditions", [])
    )
    return p["status"].get("phase") == "Running" and ready


def wait_running(c: Cluster, name: str, timeout: float = 30) -> None:
    try:
        wait_for(lambda: running_ready(c, name), timeout, f"{name} running and ready")
    except AssertionError as exc:
        log = (c.directory / "logs" / "controlplane.log").read_text()[-3000:]
        raise AssertionError(
            f"{exc}\npod: {json.dumps(pod(c, name).get('status'))}\nlog: {log}"
        ) from None


def apply(c: Cluster, manifest: str) -> None:
    c.kubectl("apply", "-f", "-", input=manifest)


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


VOLUMES = """
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {peers.json: '{"n": 4}'}
---
apiVersion: v1
kind: Secret
metadata: {name: keys}
stringData: {validator-0.key: "0xfeed"}
"""


def _writer(name: str) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - {{name: cfg, configMap: {{name: cfg}}}}
  - {{name: keys, secret: {{secretName: keys, defaultMode: 0400}}}}
  - {{name: scratch, emptyDir: {{}}}}
  containers:
  - name: c
    image: pot-validator
    command: [sh, -c, "echo {name} > /srv/pot-test-scratch/{name}.txt && exec sleep 300"]
    volumeMounts:
    - {{name: cfg, mountPath: /etc/pot/validators}}
    - {{name: keys, mountPath: /var/run/pot/keys, readOnly: true}}
    - {{name: scratch, mountPath: /srv/pot-test-scratch}}
"""


def test_volumes_are_private_to_each_pod(cluster: Cluster) -> None:
    apply(cluster, VOLUMES + "---" + _writer("writer-a") + "---" + _writer("writer-b"))
    for name in ("writer-a", "writer-b"):
        wait_running(cluster, name)
    assert (
        cluster.kubectl("exec", "writer-a", "--", "cat", "/etc/pot/validators/peers.json").stdout
        == '{"n": 4}'
    )
    assert (
        cluster.kubectl("exec", "writer-a", "--", "cat", "/var/run/pot/keys/validator-0.key").stdout
        == "0xfeed"
    )
    for name, other in (("writer-a", "writer-b"), ("writer-b", "writer-a")):
        listing = cluster.kubectl("exec", name, "--", "ls", "/srv/pot-test-scratch").stdout.split()
        assert listing == [f"{name}.txt"], f"{name} sees {listing} (not {other}'s files)"
    assert not os.path.exists("/srv/pot-test-scratch/writer-a.txt"), "volume leaked onto the host"
    assert not os.path.exists("/etc/pot/validators/peers.json")
    cluster.kubectl("delete", "pod", "writer-a", "writer-b", "--wait=false")


SHADOW = """
apiVersion: v1
kind: Pod
metadata: {name: shadow}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - {name: cfg, configMap: {name: cfg}}
  - {name: tmp, emptyDir: {}}
  containers:
  - name: c
    image: pot-operator
    command: [sh, -c, "exec sleep 300"]
    volumeMounts:
    - {name: tmp, mountPath: /tmp}
    - {name: cfg, mountPath: /etc/pot/validators}
"""


def test_volume_over_a_path_holding_other_sources(cluster: Cluster) -> None:
    """An emptyDir at /tmp (as the chart's read-only-root operator has) must not hide the
    kubelet's own sources under /tmp (the test cluster lives there): sources are staged first."""
    apply(cluster, VOLUMES + "---" + SHADOW)
    wait_running(cluster, "shadow")
    out = cluster.kubectl("exec", "shadow", "--", "cat", "/etc/pot/validators/peers.json")
    assert out.stdout == '{"n": 4}'
    assert cluster.kubectl("exec", "shadow", "--", "ls", "-A", "/tmp").stdout.split() == []
    # Its own hostname, resolving to its own IP (gloo and c10d advertise what it resolves to).
    assert cluster.kubectl("exec", "shadow", "--", "hostname").stdout.strip() == "shadow"
    ip = cluster.kubectl("get", "pod", "shadow", "-o", "jsonpath={.status.podIP}").stdout.strip()
    resolved = cluster.kubectl("exec", "shadow", "--", "getent", "hosts", "shadow").stdout.split()
    assert resolved[0] == ip
    cluster.kubectl("delete", "pod", "shadow", "--wait=false")


def test_image_stays_visible_under_a_volume_at_its_ancestor(cluster: Cluster) -> None:
    """The venv and the repository stand in for the image; a volume mounted over a
    directory that contains them (a clone under /tmp, the chart's emptyDir at /tmp)
    must not hide them from the pod's own processes."""
    ancestor = Path(__file__).resolve().parents[2].parent
    apply(
        cluster,
        f"""
apiVersion: v1
kind: Pod
metadata: {{name: overlay}}
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  volumes: [{{name: scratch, emptyDir: {{}}}}]
  containers:
  - name: c
    image: pot-trainer
    command: [python, -c, "import pot.trainer.segments, pathlib; print('ok', len(list(pathlib.Path('{ancestor}').iterdir())))"]
    volumeMounts: [{{name: scratch, mountPath: {ancestor}}}]
""",
    )
    wait_for(
        lambda: pod(cluster, "overlay")["status"].get("phase") == "Succeeded",
        what="overlay pod done",
    )
    assert cluster.kubectl("logs", "overlay").stdout.startswith("ok ")
    cluster.kubectl("delete", "pod", "overlay", "--wait=false")


CRASHER = """
apiVersion: v1
kind: Pod
metadata: {name: crasher}
spec:
  containers:
  - name: main
    image: pot-trainer
    command: [sh, -c, 'echo "run at $(date +%s%N)"; sleep 0.3; exit 3']
  - name: side
    image: pot-trainer
    command: [sh, -c, 'echo side-says-hi; exec sleep 300']
---
apiVersion: v1
kind: Pod
metadata: {name: unhealthy}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: srv
    image: python:3.11
    command: ["python", "-m", "http.server", "8000"]
    livenessProbe: {httpGet: {path: /missing, port: 8000}, initialDelaySeconds: 2, periodSeconds: 1, failureThreshold: 1}
"""


def test_logs_exec_liveness_and_crash_loop_through_kubectl(cluster: Cluster) -> None:
    apply(cluster, CRASHER)

    def crash_looping() -> bool:
        st = {c["name"]: c for c in pod(cluster, "crasher")["status"].get("containerStatuses", [])}
        main = st["main"]
        return (
            main["restartCount"] >= 2
            and main["lastState"].get("terminated", {}).get("exitCode") == 3
            and main["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff"
        )

    wait_for(crash_looping, 40, "CrashLoopBackOff with exit code 3")
    assert "CrashLoopBackOff" in cluster.kubectl("get", "pod", "crasher").stdout
    assert cluster.kubectl("logs", "crasher", "-c", "side").stdout == "side-says-hi\n"
    now = cluster.kubectl("logs", "crasher", "-c", "main").stdout
    before = cluster.kubectl("logs", "crasher", "-c", "main", "--previous").stdout
    assert now.startswith("run at ") and before.startswith("run at ") and now != before

    wait_for(
        lambda: pod(cluster, "unhealthy")["status"]["containerStatuses"][0]["state"].get("running"),
        30,
        "unhealthy running",
    )
    follow = subprocess.Popen(
        ["kubectl", "--kubeconfig", str(cluster.kubeconfig), "logs", "-f", "unhealthy"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={
            **os.environ,
            "PATH": f"{Path(__file__).parents[2] / '.venv/bin'}:{os.environ['PATH']}",
        },
    )

    def restarted() -> bool:
        st = pod(cluster, "unhealthy")["status"]["containerStatuses"][0]
        return st["restartCount"] >= 1

    wait_for(restarted, 40, "restart by the liveness probe")
    out, _ = follow.communicate(timeout=20)  # -f ends when the container instance ends
    assert "GET /missing" in out
    events = cluster.kubectl(
        "get", "events", "--field-selector", "involvedObject.name=unhealthy"
    ).stdout
    assert "Liveness probe failed" in events or "Unhealthy" in events

    proc = cluster.kubectl(
        "exec",
        "crasher",
        "-c",
        "side",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
        check=False,
    )
    assert proc.returncode == 7 and proc.stdout == "out\n" and "err" in proc.stderr
    echoed = cluster.kubectl(
        "exec", "-i", "crasher", "-c", "side", "--", "cat", input="piped\n"
    ).stdout
    assert echoed == "piped\n"
    hosts = cluster.kubectl("exec", "crasher", "-c", "side", "--", "cat", "/etc/hosts").stdout
    assert "crasher" in hosts
    cluster.kubectl("delete", "pod", "crasher", "unhealthy", "--wait=false")


def _lifecycle_pod(host_dir: Path) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: lifecycle}}
spec:
  terminationGracePeriodSeconds: 2
  volumes:
  - {{name: work, emptyDir: {{}}}}
  - {{name: out, hostPath: {{path: {host_dir}, type: DirectoryOrCreate}}}}
  initContainers:
  - name: init
    image: pot-trainer
    command: [sh, -c, "echo initialised > /scratch/init.txt"]
    volumeMounts: [{{name: work, mountPath: /scratch}}]
  - name: sidecar
    image: pot-validator
    restartPolicy: Always
    command: [sh, -c, "while true; do sleep 0.2; done"]
  containers:
  - name: main
    image: pot-trainer
    command: [sh, -c, "trap 'echo got-term >> /out/term.log' TERM; cat /scratch/init.txt; while true; do sleep 0.2; done"]
    volumeMounts: [{{name: work, mountPath: /scratch}}, {{name: out, mountPath: /out}}]
"""


def test_init_sidecar_api_access_and_graceful_termination(cluster: Cluster) -> None:
    host_dir = cluster.directory / "lifecycle-out"
    apply(cluster, _lifecycle_pod(host_dir))
    wait_running(cluster, "lifecycle")
    status = pod(cluster, "lifecycle")["status"]
    inits = {c["name"]: c for c in status["initContainerStatuses"]}
    assert inits["init"]["state"]["terminated"]["exitCode"] == 0
    assert "running" in inits["sidecar"]["state"]
    assert cluster.kubectl("logs", "lifecycle", "-c", "main").stdout == "initialised\n"
    # Pods reach the API server (kubectl from the venv, KUBECONFIG set by the kubelet).
    inside = cluster.kubectl(
        "exec", "lifecycle", "-c", "main", "--", "kubectl", "get", "pod", "lifecycle", "-o", "name"
    )
    assert inside.stdout.strip() == "pod/lifecycle"
    started = time.monotonic()
    cluster.kubectl("delete", "pod", "lifecycle", "--wait=true", timeout=60)
    took = time.monotonic() - started
    assert "got-term" in (host_dir / "term.log").read_text(), "SIGTERM first"
    assert 1.5 <= took < 15, f"grace period 2s then SIGKILL; deletion took {took:.1f}s"


def test_virtual_node_runs_pods_without_processes(cluster: Cluster) -> None:
    apply(
        cluster,
        """
apiVersion: apps/v1
kind: Deployment
metadata: {name: fleet}
spec:
  replicas: 30
  selector: {matchLabels: {app: fleet}}
  template:
    metadata: {labels: {app: fleet}}
    spec:
      nodeSelector: {type: kwok}
      tolerations: [{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}]
      containers: [{name: c, image: nginx:1.27}]
""",
    )

    def all_running() -> bool:
        items = json.loads(cluster.kubectl("get", "pods", "-l", "app=fleet", "-o", "json").stdout)[
            "items"
        ]
        return len(items) == 30 and all(p["status"].get("phase") == "Running" for p in items)

    wait_for(all_running, 60, "30 virtual pods Running")
    wait_for(
        lambda: (
            json.loads(cluster.kubectl("get", "deploy", "fleet", "-o", "json").stdout)[
                "status"
            ].get("readyReplicas")
            == 30
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

    def rerun() -> bool:
        return all(
            running_ready(cluster, f"web-{i}")
            and pod(cluster, f"web-{i}")["status"]["containerStatuses"][0]["restartCount"]
            == restarts[i] + 1
            for i in range(4)
        )

    wait_for(rerun, 40, "pods run again, counted as restarts")
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
