"""Node usage from unwatched namespaces (runtime.observe_foreign_pod, usage_watching.run).

The runtime part runs on plain bodies. ``run`` gets a scripted stand-in for the
API client (this module's one fake): its listing pages, its watch streams and a
410 Gone, as a real API server answers them (the kopf test on the local cluster
is test_watch_namespaces.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from pot.operator import kubeapi, runtime, usage_watching
from pot.operator.config import Config

GPU = "nvidia.com/gpu"


def _pod(
    ns: str, name: str, *, node: str = "rig-0", phase: str = "Running", gpus: int = 4, rv: str = "1"
) -> Any:
    return {
        "metadata": {"namespace": ns, "name": name, "resourceVersion": rv},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "c", "resources": {"limits": {GPU: str(gpus)}}}],
        },
        "status": {"phase": phase},
    }


def _waiting(rt: runtime.Runtime, make_example: Any) -> None:
    task = make_example("task-gpu.yaml", ns="farm")
    task["status"] = {"phase": "Scheduling"}
    rt.observe_task(task, False)
    rt.queue.forget((runtime.TASK, "farm", task["metadata"]["name"]))


def test_pods_outside_the_watched_namespaces_count_on_their_nodes(make_example: Any) -> None:
    rt = runtime.Runtime(Config(namespaces=("farm",)))
    _waiting(rt, make_example)
    rt.observe_foreign_pod(_pod("other", "miner"), False)
    assert rt.node_used["rig-0"][GPU] == 4 and rt.node_used["rig-0"]["pods"] == 1
    assert len(rt.queue) == 0  # less room: nothing to wake
    # kopf's feed accounts the watched namespace's pods: the usage watch leaves them be.
    rt.observe_foreign_pod(_pod("farm", "own"), False)
    assert rt.node_used["rig-0"][GPU] == 4
    rt.observe_pod(_pod("farm", "own", gpus=2), False)
    assert rt.node_used["rig-0"][GPU] == 6
    # The miner finishes (the selector reports it DELETED): its GPUs free, gangs wake.
    rt.observe_foreign_pod(_pod("other", "miner", phase="Succeeded"), True)
    assert rt.node_used["rig-0"][GPU] == 2 and len(rt.queue) == 1


def test_a_relisting_drops_foreign_pods_it_no_longer_shows() -> None:
    rt = runtime.Runtime(Config(namespaces=("farm",)))
    rt.observe_pod(_pod("farm", "own", gpus=1), False)
    rt.resync_foreign_pods([_pod("other", "a"), _pod("other", "b", node="rig-1")])
    assert rt.node_used["rig-0"][GPU] == 5 and rt.node_used["rig-1"][GPU] == 4
    rt.resync_foreign_pods([_pod("other", "b", node="rig-1")])  # "a" went unseen
    assert rt.node_used["rig-0"] == {GPU: 1, "pods": 1}  # the watched pod stays
    assert rt.node_used["rig-1"][GPU] == 4 and set(rt.pod_usage) == {
        ("farm", "own"),
        ("other", "b"),
    }


class _Api:
    """Answers ``list`` pages and watch streams from a script; records the calls."""

    def __init__(self, lists: list[list[Any]], watches: list[list[Any]]) -> None:
        self.lists, self.watches = lists, watches
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.drained = asyncio.Event()

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        self.calls.append(("list", dict(kw["params"])))
        pages = self.lists[0]
        page = pages.pop(0)
        if not pages:
            self.lists.pop(0)
        return {
            "metadata": {"resourceVersion": "10", **({"continue": "c"} if pages else {})},
            "items": page,
        }

    async def watch(
        self, path: str, params: Mapping[str, str], *, kind: str = ""
    ) -> AsyncIterator[tuple[str, Any]]:
        self.calls.append(("watch", dict(params)))
        if not self.watches:
            self.drained.set()
            await asyncio.Event().wait()  # a stream with nothing to say
        for event in self.watches.pop(0):
            if isinstance(event, Exception):
                raise event
            yield event


async def test_run_pages_watches_and_relists_after_410() -> None:
    rt = runtime.Runtime(Config(namespaces=("farm",)))
    api = _Api(
        lists=[
            [[_pod("other", "a")], [_pod("other", "b", node="rig-1")]],  # two pages
            [[_pod("other", "c")]],  # after the 410: "a" and "b" are gone
        ],
        watches=[
            [
                ("ADDED", _pod("other", "d", node="rig-1", gpus=1, rv="11")),
                ("BOOKMARK", {"metadata": {"resourceVersion": "12"}}),
            ],
            [kubeapi.ApiError(410, "Expired", "too old")],
        ],
    )
    kube: Any = api
    rv = await usage_watching.list_into(kube, rt)
    assert rv == "10" and rt.node_used["rig-0"][GPU] == 4 and rt.node_used["rig-1"][GPU] == 4
    job = asyncio.create_task(usage_watching.run(kube, rt, rv, retry=0.01))
    await asyncio.wait_for(api.drained.wait(), 5)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert set(rt.pod_usage) == {("other", "c")} and rt.node_used["rig-0"][GPU] == 4
    assert rt.node_used["rig-1"] == {GPU: 0, "pods": 0}
    kinds = [k for k, _ in api.calls]
    assert kinds == ["list", "list", "watch", "watch", "list", "watch"]
    for _, params in api.calls:
        assert params["fieldSelector"] == usage_watching.SELECTOR
    assert api.calls[1][1]["continue"] == "c"
    assert api.calls[2][1]["resourceVersion"] == "10"
    assert api.calls[3][1]["resourceVersion"] == "12"  # resumed where the stream ended
