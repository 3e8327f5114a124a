"""The real kubectl binary against the local API server, as a user drives it (issue 3)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.localcluster.conftest import KUBECTL, REPO, Cluster

pytestmark = pytest.mark.slow

DEPLOY = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: %(replicas)d
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: main
          image: pot/web:1
          env: [{name: A, value: "1"}, {name: B, value: "%(b)s"}]
          ports: [{containerPort: 8000}]
        - name: side
          image: pot/side:1
"""


@pytest.fixture(scope="module")
def cluster(apiserver_cluster: Cluster) -> Cluster:
    apiserver_cluster.kubectl("apply", "-f", str(REPO / "crds"))
    return apiserver_cluster


def test_apply_crds_and_examples_then_printer_columns(cluster: Cluster) -> None:
    out = cluster.kubectl("apply", "-f", str(REPO / "examples")).stdout
    assert "trainingtask.pot.dev/mlp-demo created" in out
    table = cluster.kubectl("get", "tt").stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "PROGRESS", "NODES", "VALIDATORSET", "AGE"]
    assert any(
        line.startswith("mlp-demo ") and " 2 " in line and "vset" in line for line in table[1:]
    )
    # Re-applying is a no-op (client-side apply computes an empty merge patch).
    assert (
        "unchanged" in cluster.kubectl("apply", "-f", str(REPO / "examples" / "task.yaml")).stdout
    )
    both = cluster.kubectl("get", "pot").stdout
    assert "trainingtask.pot.dev/mlp-demo" in both and "validatorset.pot.dev/" in both


def test_explain_shows_crd_descriptions(cluster: Cluster) -> None:
    out = cluster.kubectl("explain", "trainingtask.spec.proof").stdout
    assert "KIND:       TrainingTask" in out
    assert "Proof-of-Learning" in out and "segmentSteps" in out


def test_invalid_task_is_refused_naming_the_field(cluster: Cluster) -> None:
    bad = (
        (REPO / "examples" / "task.yaml")
        .read_text()
        .replace("segmentSteps: 25", "segmentSteps: 2500")
    )
    bad = bad.replace("name: mlp-demo", "name: bad-task")
    proc = cluster.kubectl("apply", "-f", "-", input=bad, check=False)
    assert proc.returncode != 0
    assert "spec.proof.segmentSteps" in proc.stderr and "is invalid" in proc.stderr
    typo = (
        (REPO / "examples" / "task.yaml")
        .read_text()
        .replace("segmentSteps: 25", "segmentStepz: 25")
    )
    proc = cluster.kubectl(
        "apply", "-f", "-", input=typo.replace("name: mlp-demo", "name: typo"), check=False
    )
    assert proc.returncode != 0 and 'unknown field "spec.proof.segmentStepz"' in proc.stderr


def test_get_watch_streams_changes(cluster: Cluster) -> None:
    # kubectl lists, prints, then watches from the list's resourceVersion: once the
    # marker is printed, every later change is streamed, however slow kubectl started.
    cluster.kubectl("create", "configmap", "watch-marker")
    proc = subprocess.Popen(
        [str(KUBECTL), "get", "configmaps", "-w", "--output-watch-events"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cluster._env(),
    )
    try:
        assert proc.stdout is not None
        while "watch-marker" not in proc.stdout.readline():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        cluster.kubectl("create", "configmap", "watched", "--from-literal=a=1")
        cluster.kubectl("label", "configmap", "watched", "x=y")
        cluster.kubectl("delete", "configmap", "watched")
        seen: list[str] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(
            "DELETED" in s and "watched" in s for s in seen
        ):
            seen.append(proc.stdout.readline())
        events = [s.split()[0] for s in seen if "watched" in s]
        assert events[:3] == ["ADDED", "MODIFIED", "DELETED"], seen
    finally:
        proc.kill()
        proc.communicate()


def test_delete_with_finalizer_waits_until_it_is_removed(cluster: Cluster) -> None:
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "held", "finalizers": ["pot.dev/hold"]},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(cm))
    deleting = subprocess.Popen(
        [str(KUBECTL), "delete", "configmap", "held", "--timeout=30s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cluster._env(),
    )
    try:

        def marked() -> bool:
            got = json.loads(cluster.kubectl("get", "configmap", "held", "-o", "json").stdout)
            return bool(got["metadata"].get("deletionTimestamp"))

        # Wait for the delete to have been sent (kubectl may start slowly), then give it
        # the same 1.5 s to (wrongly) return.
        deadline = time.monotonic() + 30
        while not marked():
            assert time.monotonic() < deadline, "kubectl delete never marked the object"
            time.sleep(0.1)
        with contextlib.suppress(subprocess.TimeoutExpired):
            deleting.wait(1.5)
        assert deleting.poll() is None, "kubectl delete returned while a finalizer was pending"
        cluster.kubectl(
            "patch", "configmap", "held", "--type=merge", "-p", '{"metadata":{"finalizers":null}}'
        )
        out, err = deleting.communicate(timeout=30)
        assert deleting.returncode == 0, err
        assert 'configmap "held" deleted' in out
    finally:
        if deleting.poll() is None:
            deleting.kill()
            deleting.communicate()
    assert cluster.kubectl("get", "configmap", "held", check=False).returncode != 0


def test_client_side_apply_strategic_merge_of_a_deployment(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-f", "-", input=DEPLOY % {"replicas": 1, "b": "2"})
    cluster.kubectl("apply", "-f", "-", input=DEPLOY % {"replicas": 3, "b": "20"})
    dep = json.loads(cluster.kubectl("get", "deploy", "web", "-o", "json").stdout)
    containers = dep["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["main", "side"]
    assert containers[0]["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "20"}]
    assert dep["spec"]["replicas"] == 3 and dep["metadata"]["generation"] == 2
    cluster.kubectl("scale", "deploy", "web", "--replicas=5")
    assert (
        json.loads(cluster.kubectl("get", "deploy", "web", "-o", "json").stdout)["spec"]["replicas"]
        == 5
    )
    assert "deployment.apps/web" in cluster.kubectl("get", "all").stdout


def test_server_side_apply(cluster: Cluster, tmp_path: Path) -> None:
    manifest = DEPLOY.replace("name: web", "name: ssa").replace("app: web", "app: ssa")
    out = cluster.kubectl(
        "apply", "--server-side", "-f", "-", input=manifest % {"replicas": 1, "b": "x"}
    ).stdout
    assert "serverside-applied" in out
    out = cluster.kubectl(
        "apply", "--server-side", "-f", "-", input=manifest % {"replicas": 2, "b": "y"}
    ).stdout
    dep = json.loads(
        cluster.kubectl("get", "deploy", "ssa", "-o", "json", "--show-managed-fields").stdout
    )
    assert dep["spec"]["replicas"] == 2
    assert any(
        m["manager"] == "kubectl" and m["operation"] == "Apply"
        for m in dep["metadata"]["managedFields"]
    )
    # Another manager changing an owned field conflicts, unless forced.
    proc = cluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager=other",
        "-f",
        "-",
        input=manifest % {"replicas": 4, "b": "y"},
        check=False,
    )
    assert proc.returncode != 0 and "conflict" in proc.stderr.lower()
    cluster.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=other",
        "-f",
        "-",
        input=manifest % {"replicas": 4, "b": "y"},
    )
    assert (
        json.loads(cluster.kubectl("get", "deploy", "ssa", "-o", "json").stdout)["spec"]["replicas"]
        == 4
    )
    # Custom resources too.
    task = (REPO / "examples" / "task.yaml").read_text().replace("name: mlp-demo", "name: ssa-task")
    cluster.kubectl("apply", "--server-side", "-f", "-", input=task)
    assert "ssa-task" in cluster.kubectl("get", "tt").stdout


def test_patch_label_describe_and_delete_by_selector(cluster: Cluster) -> None:
    for i in range(3):
        cluster.kubectl("create", "configmap", f"sel-{i}", f"--from-literal=i={i}")
    cluster.kubectl("label", "configmap", "sel-0", "sel-1", "group=a")
    cluster.kubectl(
        "patch",
        "configmap",
        "sel-2",
        "--type=json",
        "-p",
        '[{"op":"add","path":"/data/j","value":"x"}]',
    )
    assert json.loads(cluster.kubectl("get", "cm", "sel-2", "-o", "json").stdout)["data"] == {
        "i": "2",
        "j": "x",
    }
    names = cluster.kubectl("get", "cm", "-l", "group=a", "-o", "name").stdout.split()
    assert names == ["configmap/sel-0", "configmap/sel-1"]
    assert "Name:" in cluster.kubectl("describe", "tt", "mlp-demo").stdout
    cluster.kubectl("delete", "cm", "-l", "group=a")
    assert cluster.kubectl("get", "cm", "-l", "group=a", "-o", "name").stdout.strip() == ""
    missing = cluster.kubectl("get", "cm", "nope", check=False)
    assert missing.returncode == 1 and 'configmaps "nope" not found' in missing.stderr


def test_namespace_deletion_cascades(cluster: Cluster) -> None:
    cluster.kubectl("create", "namespace", "doomed")
    cluster.kubectl("-n", "doomed", "create", "configmap", "inside")
    task = (REPO / "examples" / "task.yaml").read_text()
    cluster.kubectl("-n", "doomed", "apply", "-f", "-", input=task)
    cluster.kubectl("delete", "namespace", "doomed", "--timeout=30s")
    assert cluster.kubectl("get", "ns", "doomed", check=False).returncode != 0
    assert (
        "No resources"
        in cluster.kubectl(
            "get", "tt", "-A", "--field-selector", "metadata.namespace=doomed"
        ).stderr
    )


def test_typed_create_commands_send_protobuf(cluster: Cluster) -> None:
    """kubectl create/run send protobuf bodies; the server decodes the kinds they use."""
    cluster.kubectl("create", "namespace", "typed")
    cluster.kubectl("-n", "typed", "create", "secret", "generic", "s", "--from-literal=k=v")
    cluster.kubectl("-n", "typed", "create", "serviceaccount", "robot")
    cluster.kubectl(
        "-n", "typed", "create", "deployment", "d", "--image=pot/web:1", "--replicas=2", "--port=80"
    )
    cluster.kubectl("-n", "typed", "create", "job", "j", "--image=pot/job:1", "--", "python", "-V")
    cluster.kubectl(
        "-n",
        "typed",
        "run",
        "p",
        "--image=pot/p:1",
        "--restart=Never",
        "--env=A=1",
        "--",
        "sleep",
        "1",
    )
    secret = json.loads(cluster.kubectl("-n", "typed", "get", "secret", "s", "-o", "json").stdout)
    assert secret["data"] == {"k": "dg=="}
    assert secret["type"] == "Opaque"  # the protobuf body says "", the server defaults it
    dep = json.loads(cluster.kubectl("-n", "typed", "get", "deploy", "d", "-o", "json").stdout)
    assert dep["spec"]["replicas"] == 2 and dep["spec"]["selector"] == {"matchLabels": {"app": "d"}}
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "pot/web:1" and container["ports"][0]["containerPort"] == 80
    job = json.loads(cluster.kubectl("-n", "typed", "get", "job", "j", "-o", "json").stdout)
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["python", "-V"]
    pod = json.loads(cluster.kubectl("-n", "typed", "get", "pod", "p", "-o", "json").stdout)
    assert pod["spec"]["restartPolicy"] == "Never" and pod["spec"]["containers"][0]["args"] == [
        "sleep",
        "1",
    ]
    assert pod["spec"]["containers"][0]["env"] == [{"name": "A", "value": "1"}]
