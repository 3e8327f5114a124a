"""The scheduler's loop: watch unbound pods, decide with ``scheduler``, bind.

Pending pods are taken in batches: usage per node is computed once per batch
from the pod cache and updated as pods are bound, so scheduling N pods costs
O(N + pods) rather than O(N x pods) (5,000 virtual pods in seconds). A pod
that fits nowhere gets ``PodScheduled=False/Unschedulable`` and a
``FailedScheduling`` event (again only when the reason changes) and is
retried whenever pods or nodes change; a gated pod gets
``PodScheduled=False/SchedulingGated`` and is left alone until its gates are
removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time
from typing import Any

from pot import errors
from pot.localcluster import apiclient, events, scheduler
from pot.localcluster.caches import Caches

log = logging.getLogger(__name__)
Obj = dict[str, Any]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _condition(pod: Obj) -> Obj | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled":
            return dict(cond)
    return None


class Scheduler:
    """default-scheduler for the local cluster."""

    def __init__(self, api: apiclient.Api, caches: Caches) -> None:
        self.api = api
        self.caches = caches
        self.pods = caches["pods"]
        self.nodes = caches["nodes"]
        self.queue: set[str] = set()
        self.unschedulable: set[str] = set()
        self.wake = asyncio.Event()
        self.messages: dict[str, str] = {}
        self.recorder = events.Recorder(api, "default-scheduler")

    def _on_pod(self, kind: str, pod: Obj) -> None:
        key = apiclient.key_of(pod)
        if kind == "DELETED" or not scheduler.wants_default_scheduler(pod):
            self.queue.discard(key)
            self.messages.pop(key, None)
            # Freed capacity (a pod gone or finished): unschedulable pods may fit now.
            if kind == "DELETED" or not scheduler.is_active(pod):
                self._retry()
            return
        self.queue.add(key)
        self.wake.set()

    def _on_node(self, _kind: str, _node: Obj) -> None:
        self._retry()

    def _retry(self) -> None:
        if self.unschedulable:
            self.queue |= self.unschedulable
            self.unschedulable.clear()
            self.wake.set()

    async def run(self) -> None:
        """Schedule forever."""
        self.pods.add_handler(self._on_pod)
        self.nodes.add_handler(self._on_node)
        await self.caches.wait_synced(["pods", "nodes"])
        for pod in list(self.pods.cache.values()):
            self._on_pod("ADDED", pod)
        last_retry = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=2.0)
            self.wake.clear()
            if time.monotonic() - last_retry > 2.0:
                self._retry()
                last_retry = time.monotonic()
            batch, self.queue = self.queue, set()
            if batch:
                await self._schedule_batch(sorted(batch))

    async def _schedule_batch(self, keys: list[str]) -> None:
        node_list = list(self.nodes.cache.values())
        used = scheduler.usage(self.pods.cache.values())
        binds = []
        for key in keys:
            pod = self.pods.cache.get(key)
            if pod is None or not scheduler.wants_default_scheduler(pod):
                continue
            if scheduler.is_gated(pod):
                await self._mark(
                    pod,
                    "SchedulingGated",
                    "Scheduling is blocked due to non-empty scheduling gates",
                )
                continue
            decision = scheduler.schedule(pod, node_list, used)
            if decision.node is None:
                self.unschedulable.add(key)
                await self._unschedulable(pod, decision.message)
                continue
            into = used.setdefault(decision.node, {})
            for resource, amount in scheduler.pod_requests(pod).items():
                into[resource] = into.get(resource, 0) + amount
            into["pods"] = into.get("pods", 0) + 1
            bound = copy.deepcopy(pod)
            bound["spec"]["nodeName"] = decision.node
            self.pods.remember(bound)
            binds.append(self._bind(pod, decision.node))
        for i in range(0, len(binds), 32):
            await asyncio.gather(*binds[i : i + 32])

    async def _bind(self, pod: Obj, node: str) -> None:
        meta = pod["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        path = apiclient.path_for("v1", "pods", meta["namespace"], f"{meta['name']}/binding")
        try:
            await self.api.create(path, body)
        except apiclient.ApiFailure as exc:
            if exc.code not in {404, 409}:
                log.warning(
                    "binding %s/%s to %s failed: %s", meta["namespace"], meta["name"], node, exc
                )
                self.queue.add(apiclient.key_of(pod))
            return
        except errors.ClusterError as exc:
            log.warning("binding %s/%s failed: %s", meta["namespace"], meta["name"], exc)
            self.queue.add(apiclient.key_of(pod))
            return
        self.recorder.emit(
            pod, "Scheduled", f"Successfully assigned {meta['namespace']}/{meta['name']} to {node}"
        )

    async def _mark(self, pod: Obj, reason: str, message: str) -> bool:
        """Write PodScheduled=False with ``reason``; False when already so."""
        current = _condition(pod)
        if current and current.get("reason") == reason and current.get("message") == message:
            return False
        cond = {
            "type": "PodScheduled",
            "status": "False",
            "reason": reason,
            "message": message,
            "lastProbeTime": None,
            "lastTransitionTime": _now(),
        }
        others = [
            c
            for c in (pod.get("status") or {}).get("conditions") or []
            if c.get("type") != "PodScheduled"
        ]
        meta = pod["metadata"]
        status: Obj = {"conditions": [*others, cond]}
        if not (pod.get("status") or {}).get("phase"):
            status["phase"] = "Pending"
        path = apiclient.path_for("v1", "pods", meta["namespace"], f"{meta['name']}/status")
        try:
            updated = await apiclient.ignore_missing(self.api.patch(path, {"status": status}))
        except errors.ClusterError as exc:
            log.warning("status of %s/%s: %s", meta["namespace"], meta["name"], exc)
            return False
        if updated:
            self.pods.remember(updated)
        return True

    async def _unschedulable(self, pod: Obj, message: str) -> None:
        key = apiclient.key_of(pod)
        if self.messages.get(key) == message:
            return
        self.messages[key] = message
        await self._mark(pod, "Unschedulable", message)
        self.recorder.emit(pod, "FailedScheduling", message, "Warning")
