"""The local cluster running real pods, driven through the real kubectl (issue 4
"Must show"), part 2: what happens inside a pod — volumes, logs, exec,
liveness probes, crash loops, init and sidecar containers, API access and
graceful termination. One cluster for the whole module (kubelet_kit).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import Cluster
from .kubelet_kit import (
    apply,
    pod,
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
    # Empty, but for the "image" (the repository and its venv) when it lives under /tmp
    # (a clone there): it stays visible under volumes at its ancestors, by design.
    repo = Path(__file__).resolve().parents[2]
    image = [repo.relative_to("/tmp").parts[0]] if repo.is_relative_to("/tmp") else []
    assert cluster.kubectl("exec", "shadow", "--", "ls", "-A", "/tmp").stdout.split() == image
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


def test_processes_that_left_the_container_group_die_with_it(cluster: Cluster) -> None:
    # A daemon (setsid: its own session and group) started by a container dies with the
    # container, as a runtime's cgroup ensures: on a crash before the restart (it could hold a
    # port the restart needs) and on pod deletion (it would live on in a deleted netns).
    pids = cluster.directory / "escaped.pids"
    apply(
        cluster,
        f"""
apiVersion: v1
kind: Pod
metadata: {{name: escaper}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: x
    command: [sh, -c, "setsid sleep 601 & echo $! >> {pids}; sleep 0.5; exit 1"]
""",
    )

    def alive(pid: int) -> bool:
        try:
            return b"601" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False

    def started() -> list[int]:
        return [int(p) for p in pids.read_text().split()] if pids.exists() else []

    wait_for(lambda: len(started()) >= 2, 30, "a restart")
    first = started()[0]
    wait_for(lambda: not alive(first), 5, f"the first instance's daemon {first} killed")
    cluster.kubectl("delete", "pod", "escaper", "--wait=true", timeout=60)
    left = [p for p in started() if alive(p)]
    assert left == [], f"daemons outlived their pod: {left}"


def test_condition_transition_times_move_only_with_the_condition(cluster: Cluster) -> None:
    # Every status write (here: a sibling container crash-looping) used to restamp every
    # condition's lastTransitionTime, even PodScheduled's and Initialized's, which never move.
    apply(
        cluster,
        """
apiVersion: v1
kind: Pod
metadata: {name: flapping}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: steady, image: x, command: [sleep, "600"]}
  - {name: flappy, image: x, command: [sh, -c, "sleep 1.5; exit 1"]}
""",
    )

    def times() -> dict[str, str]:
        conds = pod(cluster, "flapping")["status"].get("conditions") or []
        return {c["type"]: c["lastTransitionTime"] for c in conds}

    wait_for(lambda: "Initialized" in times(), 30, "conditions")
    first = times()
    wait_for(
        lambda: (
            max(s["restartCount"] for s in pod(cluster, "flapping")["status"]["containerStatuses"])
            >= 2
        ),
        30,
        "another restart",
    )
    later = times()
    for kind in ("PodScheduled", "Initialized", "PodReadyToStartContainers"):
        assert later[kind] == first[kind], (kind, first, later)
    cluster.kubectl("delete", "pod", "flapping", "--wait=false")


def test_sidecars_stop_once_the_main_containers_are_done(cluster: Cluster) -> None:
    # A Job-like pod (restartPolicy Never) with a native sidecar: once main has exited the pod
    # is Succeeded, and its sidecar must stop too (it ran on, reported running, with its
    # network namespace held, for as long as the pod object lived).
    apply(
        cluster,
        """
apiVersion: v1
kind: Pod
metadata: {name: job-with-sidecar}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  initContainers:
  - {name: shipper, image: x, restartPolicy: Always, command: [sleep, "602"]}
  containers:
  - {name: main, image: x, command: [sh, -c, "sleep 1"]}
""",
    )
    wait_for(
        lambda: pod(cluster, "job-with-sidecar")["status"].get("phase") == "Succeeded",
        30,
        "Succeeded",
    )

    def shipper() -> dict[str, Any]:
        return pod(cluster, "job-with-sidecar")["status"]["initContainerStatuses"][0]

    pid = int(shipper()["containerID"].rsplit("/", 1)[1])

    wait_for(lambda: "terminated" in shipper()["state"], 10, f"sidecar stopped: {shipper()}")
    assert not Path(f"/proc/{pid}").exists(), "the sidecar's process is gone"
    assert pod(cluster, "job-with-sidecar")["status"]["phase"] == "Succeeded"
    cluster.kubectl("delete", "pod", "job-with-sidecar", "--wait=false")


def test_sidecars_stop_when_an_init_container_fails_the_pod(cluster: Cluster) -> None:
    apply(
        cluster,
        """
apiVersion: v1
kind: Pod
metadata: {name: init-fails}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 2
  initContainers:
  - {name: shipper, image: x, restartPolicy: Always, command: [sleep, "603"]}
  - {name: setup, image: x, command: [sh, -c, "exit 2"]}
  containers:
  - {name: main, image: x, command: [sleep, "603"]}
""",
    )
    wait_for(lambda: pod(cluster, "init-fails")["status"].get("phase") == "Failed", 30, "Failed")

    def shipper() -> dict[str, Any]:
        return pod(cluster, "init-fails")["status"]["initContainerStatuses"][0]

    pid = int(shipper()["containerID"].rsplit("/", 1)[1])
    wait_for(lambda: "terminated" in shipper()["state"], 10, f"sidecar stopped: {shipper()}")
    assert not Path(f"/proc/{pid}").exists(), "the sidecar's process is gone"
    cluster.kubectl("delete", "pod", "init-fails", "--wait=false")


def test_a_crash_loop_keeps_two_log_files(cluster: Cluster) -> None:
    # The current instance's log and the previous one (kubectl logs --previous), not one file
    # per restart for as long as the loop lasts.
    apply(
        cluster,
        """
apiVersion: v1
kind: Pod
metadata: {name: looper}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: x, command: [sh, -c, "echo run; exit 1"]}
""",
    )
    wait_for(
        lambda: pod(cluster, "looper")["status"]["containerStatuses"][0]["restartCount"] >= 4,
        40,
        "four restarts",
    )
    uid = pod(cluster, "looper")["metadata"]["uid"]
    (logs,) = (cluster.directory / "kubelet" / "pods").glob(f"default_looper_{uid[:8]}/logs/c")
    assert len(list(logs.iterdir())) <= 2, sorted(p.name for p in logs.iterdir())
    assert cluster.kubectl("logs", "looper", "--previous").stdout == "run\n"
    cluster.kubectl("delete", "pod", "looper", "--wait=false")


def test_host_path_files_and_type_checks(cluster: Cluster) -> None:
    # A hostPath naming an existing file with no type (the /etc/localtime pattern) left the
    # pod in ContainerCreating for good ("kubelet error: File exists"); FileOrCreate failed
    # to mount; a missing Directory is a FailedMount that clears once it exists.
    host = cluster.directory / "hostpaths"
    host.mkdir()
    (host / "existing.txt").write_text("from the host\n")
    missing = host / "later"
    apply(
        cluster,
        f"""
apiVersion: v1
kind: Pod
metadata: {{name: host-files}}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - {{name: existing, hostPath: {{path: {host}/existing.txt}}}}
  - {{name: created, hostPath: {{path: {host}/new/created.txt, type: FileOrCreate}}}}
  - {{name: later, hostPath: {{path: {missing}, type: Directory}}}}
  containers:
  - name: c
    image: x
    command: [sh, -c, "cat /in/existing.txt; echo written > /out/created.txt; exec sleep 600"]
    volumeMounts:
    - {{name: existing, mountPath: /in/existing.txt, readOnly: true}}
    - {{name: created, mountPath: /out/created.txt}}
    - {{name: later, mountPath: /srv/pot-test-later}}
""",
    )
    wait_for(
        lambda: (
            "is not a directory"
            in pod(cluster, "host-files")["status"]["containerStatuses"][0]["state"]["waiting"][
                "message"
            ]
        ),
        30,
        "FailedMount for the missing Directory",
    )
    missing.mkdir()
    wait_running(cluster, "host-files")
    wait_for(lambda: cluster.kubectl("logs", "host-files").stdout == "from the host\n", 10, "log")
    wait_for(lambda: (host / "new" / "created.txt").read_text() == "written\n", 10, "file written")
    cluster.kubectl("delete", "pod", "host-files", "--wait=false")
