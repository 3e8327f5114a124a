"""The controller manager's loop: run the pure reconcilers and apply their plans.

Changes seen by the shared caches mark owners dirty (a pod marks its
controller and the Services of its namespace; a ReplicaSet marks its
Deployment); a worker takes dirty keys, calls the pure reconciler
(``controllers``, ``controllers_sts``, ``controllers_endpoints``) with what the
caches hold, and applies the plan over the API. Objects it creates or deletes
go into the cache at once, so the next pass does not create twice before the
watch catches up (client-go's "expectations").

Also here, the node lifecycle controller: a node whose heartbeat is older
than ``node_grace`` goes ``Ready=Unknown`` with the ``unreachable`` taints
and its pods go not-ready; ``eviction_timeout`` later its pods are evicted
(a ``DisruptionTarget`` condition, then deleted). Because the node is
considered gone, the deletion is forced (grace 0), as the pod GC does on a
real cluster once a dead node is removed; controllers then replace the pods
on healthy nodes.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from dataclasses import dataclass
from typing import Any

from pot import errors
from pot.localcluster import (
    apiclient,
    controllers,
    controllers_endpoints,
    controllers_sts,
    events,
    scheduler,
)
from pot.localcluster.caches import Caches

log = logging.getLogger(__name__)
Obj = dict[str, Any]

KINDS = {
    "ReplicaSet": ("apps/v1", "replicasets"),
    "Deployment": ("apps/v1", "deployments"),
    "StatefulSet": ("apps/v1", "statefulsets"),
    "Job": ("batch/v1", "jobs"),
    "Service": ("v1", "services"),
}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass(kw_only=True, slots=True)
class LifecycleConfig:
    """Node lifecycle timings (Kubernetes: 40 s grace, 300 s eviction)."""

    node_grace: float = 6.0
    """Seconds without a heartbeat before a node is NotReady (Unknown)."""
    eviction_timeout: float = 5.0
    """Seconds NotReady before its pods are evicted."""


class ControllerManager:
    """ReplicaSet, Deployment, StatefulSet, Job, Endpoints and node lifecycle."""

    def __init__(self, api: apiclient.Api, caches: Caches, lifecycle: LifecycleConfig) -> None:
        self.api = api
        self.caches = caches
        self.lifecycle = lifecycle
        self.dirty: set[tuple[str, str]] = set()
        self.wake = asyncio.Event()
        self.recorder = events.Recorder(api, "controller-manager")
        self.not_ready_since: dict[str, float] = {}
        self.heartbeats: dict[str, tuple[str, float]] = {}

    # -- change routing ----------------------------------------------------
    def _mark(self, kind: str, key: str) -> None:
        self.dirty.add((kind, key))
        self.wake.set()

    def _owner(self, obj: Obj) -> tuple[str, str] | None:
        meta = obj.get("metadata") or {}
        for ref in meta.get("ownerReferences") or []:
            if ref.get("controller") and ref.get("kind") in KINDS:
                ns = meta.get("namespace")
                return ref["kind"], f"{ns}/{ref['name']}" if ns else ref["name"]
        return None

    def _on_pod(self, _kind: str, pod: Obj) -> None:
        owner = self._owner(pod)
        if owner:
            self._mark(*owner)
        ns = (pod.get("metadata") or {}).get("namespace")
        prefix = f"{ns}/"
        for key in self.caches["services"].cache:
            if key.startswith(prefix):
                self._mark("Service", key)

    def _on_owned(self, kind: str) -> Any:
        def handler(_event: str, obj: Obj) -> None:
            self._mark(kind, apiclient.key_of(obj))
            owner = self._owner(obj)
            if owner:
                self._mark(*owner)

        return handler

    async def run(self) -> None:
        """Reconcile forever."""
        self.caches["pods"].add_handler(self._on_pod)
        for kind, (_, resource) in KINDS.items():
            self.caches[resource].add_handler(self._on_owned(kind))
        await self.caches.wait_synced()
        for kind, (_, resource) in KINDS.items():
            for key in list(self.caches[resource].cache):
                self._mark(kind, key)
        lifecycle = asyncio.create_task(self._node_lifecycle())
        try:
            while True:
                try:
                    await asyncio.wait_for(self.wake.wait(), timeout=5.0)
                except TimeoutError:
                    # Periodic resync: re-check everything now and then, as real controllers do.
                    for kind, (_, resource) in KINDS.items():
                        for key in list(self.caches[resource].cache):
                            self.dirty.add((kind, key))
                self.wake.clear()
                await asyncio.sleep(0.01)
                batch, self.dirty = self.dirty, set()
                for kind, key in sorted(batch):
                    try:
                        await self._reconcile(kind, key)
                    except errors.ClusterError as exc:
                        log.info("reconcile %s %s: %s (will retry)", kind, key, exc)
                        self.dirty.add((kind, key))
                    except Exception:
                        log.exception("reconcile %s %s failed", kind, key)
                if self.dirty:
                    await asyncio.sleep(0.2)
                    self.wake.set()
        finally:
            lifecycle.cancel()

    # -- reconcile ---------------------------------------------------------
    def _in_namespace(self, resource: str, ns: str) -> list[Obj]:
        prefix = f"{ns}/"
        return [o for k, o in self.caches[resource].cache.items() if k.startswith(prefix)]

    async def _reconcile(self, kind: str, key: str) -> None:
        api_version, resource = KINDS[kind]
        obj = self.caches[resource].cache.get(key)
        if obj is None:
            return
        ns = obj["metadata"]["namespace"]
        pods = self._in_namespace("pods", ns)
        if kind == "Service":
            await self._endpoints(obj, pods)
            return
        if kind == "ReplicaSet":
            plan = controllers.replicaset(obj, pods)
        elif kind == "Deployment":
            plan = controllers.deployment(obj, self._in_namespace("replicasets", ns), pods)
        elif kind == "StatefulSet":
            pvcs = {
                o["metadata"]["name"]: o for o in self._in_namespace("persistentvolumeclaims", ns)
            }
            plan = controllers_sts.statefulset(obj, pods, pvcs)
        else:
            plan = controllers.job(obj, pods, now=_now())
        await self._apply(plan.actions)
        if plan.status is not None:
            current = obj.get("status") or {}
            if any(current.get(k) != v for k, v in plan.status.items()):
                path = apiclient.path_for(
                    api_version, resource, ns, f"{obj['metadata']['name']}/status"
                )
                updated = await apiclient.ignore_missing(
                    self.api.patch(path, {"status": plan.status})
                )
                if updated:
                    self.caches[resource].remember(updated)

    async def _apply(self, actions: list[controllers.Action]) -> None:
        creates = [a for a in actions if isinstance(a, controllers.Create)]
        for i in range(0, len(creates), 32):
            await asyncio.gather(*(self._create(a) for a in creates[i : i + 32]))
        for action in actions:
            if isinstance(action, controllers.Delete):
                path = apiclient.path_for(
                    action.api_version, action.resource, action.namespace, action.name
                )
                result = await apiclient.ignore_missing(self.api.delete(path, uid=action.uid))
                cache = self.caches[action.resource]
                if (
                    result
                    and result.get("kind") != "Status"
                    and (result.get("metadata") or {}).get("deletionTimestamp")
                ):
                    cache.remember(result)
                else:
                    gone = cache.cache.get(f"{action.namespace}/{action.name}")
                    if gone is not None and gone["metadata"].get("uid") == action.uid:
                        cache.forget(gone)
            elif isinstance(action, controllers.Patch):
                name = f"{action.name}/{action.subresource}" if action.subresource else action.name
                path = apiclient.path_for(
                    action.api_version, action.resource, action.namespace, name
                )
                updated = await apiclient.ignore_missing(self.api.patch(path, action.patch))
                if updated:
                    self.caches[action.resource].remember(updated)
            elif isinstance(action, controllers.Event):
                self.recorder.emit(action.involved, action.reason, action.message, action.type)

    async def _create(self, action: controllers.Create) -> None:
        path = apiclient.path_for(action.api_version, action.resource, action.namespace)
        try:
            created = await self.api.create(path, action.body)
        except apiclient.ApiFailure as exc:
            if exc.code == 409:
                return  # already there (a stable name, or a retry): the watch will show it
            raise
        self.caches[action.resource].remember(created)

    async def _endpoints(self, service: Obj, pods: list[Obj]) -> None:
        desired = controllers_endpoints.endpoints(service, pods)
        if desired is None:
            return
        ns = service["metadata"]["namespace"]
        owner = controllers.owner_ref(service) | {"controller": True}
        for body, (api_version, resource) in zip(
            desired, (("v1", "endpoints"), ("discovery.k8s.io/v1", "endpointslices")), strict=True
        ):
            current = self.caches[resource].cache.get(f"{ns}/{body['metadata']['name']}")
            if controllers_endpoints.same_content(current, body):
                continue
            if resource == "endpointslices":
                body["metadata"]["ownerReferences"] = [owner]
            if current is None:
                try:
                    created = await self.api.create(
                        apiclient.path_for(api_version, resource, ns), body
                    )
                    self.caches[resource].remember(created)
                    continue
                except apiclient.ApiFailure as exc:
                    if exc.code != 409:
                        raise
            fields: Obj = {
                k: body[k] for k in ("subsets", "endpoints", "ports", "addressType") if k in body
            }
            path = apiclient.path_for(api_version, resource, ns, body["metadata"]["name"])
            updated = await self.api.patch(path, fields)
            self.caches[resource].remember(updated)

    # -- node lifecycle ----------------------------------------------------
    async def _node_lifecycle(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for node in list(self.caches["nodes"].cache.values()):
                try:
                    await self._check_node(node)
                except errors.ClusterError as exc:
                    log.info("node lifecycle %s: %s", node["metadata"]["name"], exc)

    async def _check_node(self, node: Obj) -> None:
        name = node["metadata"]["name"]
        ready = next(
            (
                c
                for c in (node.get("status") or {}).get("conditions") or []
                if c.get("type") == "Ready"
            ),
            None,
        )
        if ready is None:
            return
        taints = list((node.get("spec") or {}).get("taints") or [])
        unreachable = [t for t in taints if t.get("key") == scheduler.UNREACHABLE_TAINT]
        # Like the node lifecycle controller's probeTimestamp: staleness is
        # measured on this process's clock from when a new heartbeat was seen,
        # so clock skew and one-second timestamps cannot fail a healthy node.
        beat = str(ready.get("lastHeartbeatTime"))
        seen = self.heartbeats.get(name)
        if seen is None or seen[0] != beat:
            seen = self.heartbeats[name] = (beat, time.monotonic())
        stale = time.monotonic() - seen[1] > self.lifecycle.node_grace
        path = apiclient.path_for("v1", "nodes", name=name)
        if ready.get("status") == "True" and not stale:
            self.not_ready_since.pop(name, None)
            if unreachable:
                kept = [t for t in taints if t.get("key") != scheduler.UNREACHABLE_TAINT]
                self.caches["nodes"].remember(
                    await self.api.patch(path, {"spec": {"taints": kept}})
                )
            return
        if not stale:
            return
        if ready.get("status") != "Unknown":
            conditions = [
                c
                | {
                    "status": "Unknown",
                    "reason": "NodeStatusUnknown",
                    "message": "Kubelet stopped posting node status.",
                    "lastTransitionTime": _now(),
                }
                for c in (node.get("status") or {}).get("conditions") or []
            ]
            updated = await self.api.patch(f"{path}/status", {"status": {"conditions": conditions}})
            self.caches["nodes"].remember(updated)
            self.recorder.emit(
                node | {"kind": "Node"}, "NodeNotReady", f"Node {name} status is now: NodeNotReady"
            )
            await self._mark_pods_not_ready(name)
        if not unreachable:
            stamp = _now()
            taints += [
                {"key": scheduler.UNREACHABLE_TAINT, "effect": "NoSchedule", "timeAdded": stamp},
                {"key": scheduler.UNREACHABLE_TAINT, "effect": "NoExecute", "timeAdded": stamp},
            ]
            self.caches["nodes"].remember(await self.api.patch(path, {"spec": {"taints": taints}}))
        since = self.not_ready_since.setdefault(name, time.monotonic())
        if time.monotonic() - since >= self.lifecycle.eviction_timeout:
            await self._evict(name)

    def _pods_on(self, node: str) -> list[Obj]:
        return [
            p
            for p in self.caches["pods"].cache.values()
            if (p.get("spec") or {}).get("nodeName") == node
        ]

    async def _mark_pods_not_ready(self, node: str) -> None:
        for pod in self._pods_on(node):
            if not controllers.is_active(pod):
                continue
            conditions = [
                c | {"status": "False", "lastTransitionTime": _now()}
                if c.get("type") == "Ready"
                else c
                for c in (pod.get("status") or {}).get("conditions") or []
            ]
            meta = pod["metadata"]
            path = apiclient.path_for("v1", "pods", meta["namespace"], f"{meta['name']}/status")
            await apiclient.ignore_missing(
                self.api.patch(path, {"status": {"conditions": conditions}})
            )

    async def _evict(self, node: str) -> None:
        taint = {"key": scheduler.UNREACHABLE_TAINT, "effect": "NoExecute"}
        for pod in self._pods_on(node):
            tolerations = (pod.get("spec") or {}).get("tolerations") or []
            matching = [t for t in tolerations if scheduler.tolerates([t], taint)]
            if matching and all(t.get("tolerationSeconds") is None for t in matching):
                continue  # tolerates forever
            meta = pod["metadata"]
            cond = {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "DeletionByTaintManager",
                "message": "Taint manager: deleting due to NoExecute taint",
                "lastTransitionTime": _now(),
            }
            others = [
                c
                for c in (pod.get("status") or {}).get("conditions") or []
                if c.get("type") != "DisruptionTarget"
            ]
            status_path = apiclient.path_for(
                "v1", "pods", meta["namespace"], f"{meta['name']}/status"
            )
            status: Obj = {"conditions": [*others, cond]}
            if controllers.is_active(pod):
                status |= {
                    "phase": "Failed",
                    "reason": "NodeLost",
                    "message": f"Node {node} which was running pod {meta['name']} is unresponsive",
                }
            await apiclient.ignore_missing(self.api.patch(status_path, {"status": status}))
            self.recorder.emit(
                pod,
                "TaintManagerEviction",
                f"Marking for deletion Pod {meta['namespace']}/{meta['name']}",
            )
            path = apiclient.path_for("v1", "pods", meta["namespace"], meta["name"])
            await apiclient.ignore_missing(self.api.delete(path, grace=0, uid=meta.get("uid")))
            gone = copy.deepcopy(pod)
            self.caches["pods"].forget(gone)
