"""The running local cluster shared by test_kubelet_cluster and test_kubelet_pods:
API server + control plane as `pot local up` starts them, with shortened
back-off and eviction timings, on two 4-GPU rigs and one tainted virtual node."""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pot.localcluster import controlplane, launching

from .conftest import Cluster

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


def start_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Generator for a module-scoped fixture: one cluster per test module."""
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
