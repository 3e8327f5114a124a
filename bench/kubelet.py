"""``pot bench kubelet``: pod creation -> Running on the local cluster.

Real-process pods (their own netns, IP and ``sleep`` process) on the two GPU
rigs: 1, 10 and 100; virtual (kwok-like) pods on virtual nodes: 1,000 and
5,000 (``--quick``: 1 and 10 real, 100 and 500 virtual). The cluster runs as
``pot local up`` starts it. Pods are created by 16 concurrent clients and
Running is observed through a watch.

Baseline in the same run, just before each round: the time to create the
same number of pods, by the same 16 clients, with a ``schedulerName`` no
component serves (no scheduler, no kubelet involved: API writes only), so
``x_api`` says how many times the bare API cost getting pods to Running
takes. Each size is one round (one sample), so the 1-pod row is noisy.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import common

from pot.localcluster import apiclient, controlplane, launching

CONCURRENCY = 16
NS = "default"
LAYOUT = """
nodes:
- {name: gpu-rig-0, gpus: 4, pods: 200}
- {name: gpu-rig-1, gpus: 4, pods: 200}
- {name: kwok-0, gpus: 8, virtual: true, pods: 4000, taints: [{key: kwok.x-k8s.io/node, value: fake, effect: NoSchedule}]}
- {name: kwok-1, gpus: 8, virtual: true, pods: 4000, taints: [{key: kwok.x-k8s.io/node, value: fake, effect: NoSchedule}]}
"""


def _pod(name: str, batch: str, *, virtual: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}],
    }
    if virtual:
        spec["nodeSelector"] = {"type": "kwok"}
        spec["tolerations"] = [{"key": "kwok.x-k8s.io/node", "operator": "Exists"}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": batch}},
        "spec": spec,
    }


async def _create_all(api: apiclient.Api, bodies: list[dict[str, Any]], path: str) -> float:
    queue = list(bodies)

    async def worker() -> None:
        while queue:
            await api.create(path, queue.pop())

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.perf_counter() - t0


async def _round(api: apiclient.Api, n: int, *, virtual: bool, tag: str) -> tuple[float, float]:
    """(seconds from first create to all Running, seconds to create them)."""
    batch = f"{tag}-{n}"
    running: set[str] = set()
    done = asyncio.Event()

    def seen(kind: str, obj: dict[str, Any]) -> None:
        if kind != "DELETED" and (obj.get("status") or {}).get("phase") == "Running":
            running.add(obj["metadata"]["name"])
            if len(running) >= n:
                done.set()

    pods_path = apiclient.path_for("v1", "pods", NS)
    informer = apiclient.Informer(api, pods_path, seen, params={"labelSelector": f"bench={batch}"})
    watching = asyncio.create_task(informer.run())
    await informer.synced.wait()
    bodies = [_pod(f"{batch}-{i}", batch, virtual=virtual) for i in range(n)]
    t0 = time.perf_counter()
    created = await _create_all(api, bodies, pods_path)
    await asyncio.wait_for(done.wait(), timeout=600)
    total = time.perf_counter() - t0
    watching.cancel()
    await api.request(
        "DELETE",
        pods_path,
        params={"labelSelector": f"bench={batch}", "gracePeriodSeconds": "0"},
        timeout=300,
    )
    # Wait for the kubelet to finish tearing the real pods down before the next round.
    for _ in range(600):
        left = await api.get(pods_path, labelSelector=f"bench={batch}")
        if not left.get("items"):
            break
        await asyncio.sleep(0.2)
    return total, created


async def _baseline(api: apiclient.Api, n: int) -> float:
    """Create ``n`` pods no component will touch (schedulerName: none), then delete them."""
    path = apiclient.path_for("v1", "pods", NS)
    bodies = []
    for i in range(n):
        body = _pod(f"base-{n}-{i}", f"base-{n}", virtual=True)
        body["spec"]["schedulerName"] = "bench-nobody"
        bodies.append(body)
    took = await _create_all(api, bodies, path)
    await api.request("DELETE", path, params={"labelSelector": f"bench=base-{n}"}, timeout=300)
    return took


async def _bench(kubeconfig: Path, quick: bool) -> list[list[Any]]:
    api = apiclient.Api(apiclient.load_kubeconfig(kubeconfig), user_agent="pot-bench")
    rows: list[list[Any]] = []
    try:
        for _ in range(100):  # nodes registered and Ready
            nodes = (await api.get("/api/v1/nodes")).get("items") or []
            if len(nodes) == 4:
                break
            await asyncio.sleep(0.2)
        sizes = [(1, False), (10, False)] + ([] if quick else [(100, False)])
        sizes += [(100, True), (500, True)] if quick else [(1000, True), (5000, True)]
        for n, virtual in sizes:
            base = await _baseline(api, n)
            total, created = await _round(api, n, virtual=virtual, tag="v" if virtual else "r")
            rows.append(
                [
                    "virtual" if virtual else "process",
                    n,
                    round(total, 3),
                    round(total / n * 1e3, 2),
                    round(created, 3),
                    round(base, 3),
                    round(total / base, 2) if base else None,
                ]
            )
            print(rows[-1], flush=True)
    finally:
        await api.close()
    return rows


def main(quick: bool = False) -> dict[str, Any]:
    """Run the benchmark; returns the report."""
    with tempfile.TemporaryDirectory(prefix="pot-bench-kubelet-") as tmp:
        directory = Path(tmp)
        (directory / "layout.yaml").write_text(LAYOUT)
        controlplane.install_layout(directory, directory / "layout.yaml")
        kubeconfig, _ = launching.up(directory)
        try:
            rows = asyncio.run(_bench(kubeconfig, quick))
        finally:
            launching.down(directory)
    return common.report(
        "kubelet",
        ["pods", "n", "to_running_s", "per_pod_ms", "create_s", "api_only_s", "x_api"],
        rows,
        note="to_running_s: first create -> all Running (watch); api_only_s: same number of "
        "pod creates nobody schedules (same run); x_api = to_running_s / api_only_s",
        quick=quick,
    )


if __name__ == "__main__":
    main(quick=True)
