"""The process kubelet: registers the virtual GPU nodes and runs their pods.

One kubelet serves every node of the layout (they are all this machine). For
each node it keeps the Node object's status heartbeated, and for each pod
bound to one of them it runs a ``PodWorker`` (real processes in a pod network
namespace) or, on a virtual node, just reports the pod Running (kwok-like, for
measurements with thousands of pods). Status writes go through the
``pods/status`` subresource, batched per pod so a burst of container changes
is one PATCH.

``pot local node fail NAME`` sets an annotation on the Node; the kubelet then
acts as if that machine lost power: its pods' processes are SIGKILLed and its
heartbeats stop, so the node lifecycle controller sees it go NotReady and
evicts its pods. Clearing the annotation brings the node back.

On start it first removes anything a previous (crashed) kubelet of the same
cluster left: marked processes, pod network namespaces, then re-runs the pods
the API server says are bound here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pot import errors
from pot.localcluster import (
    apiclient,
    apiforward,
    containers,
    events,
    kubelet_status,
    nodes,
    pki,
    podhosts,
    podnet,
)
from pot.localcluster.caches import Caches
from pot.localcluster.kubelet_pods import PodWorker

log = logging.getLogger(__name__)
Obj = dict[str, Any]


def _iso(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@dataclass(kw_only=True, slots=True)
class KubeletConfig:
    """Settings of the process kubelet."""

    cluster_dir: Path
    """The cluster's directory (`pot local up --dir`); names its network."""
    nodes: list[nodes.NodeConfig] = field(default_factory=nodes.default_layout)
    """The node layout this kubelet serves."""
    heartbeat: float = 2.0
    """Seconds between node status heartbeats."""
    backoff_base: float = 2.0
    """CrashLoopBackOff: first back-off (doubles per crash; Kubernetes uses 10 s)."""
    backoff_max: float = 60.0
    """CrashLoopBackOff: cap (Kubernetes uses 300 s)."""
    pod_network: bool = True
    """Give pods their own network namespace and IP (False: host network)."""
    venv_bin: str = field(default_factory=lambda: str(Path(sys.executable).parent))
    """Where python/torchrun for pods come from."""

    @property
    def state_dir(self) -> Path:
        """Where pod directories, logs and PVC data live."""
        return self.cluster_dir / "kubelet"


class Kubelet:
    """Runs the pods of every node in ``config.nodes``."""

    def __init__(self, api: apiclient.Api, config: KubeletConfig, caches: Caches) -> None:
        self.api = api
        self.config = config
        self.state_dir = config.state_dir
        self.venv_bin = config.venv_bin
        self.backoff_base = config.backoff_base
        self.backoff_max = config.backoff_max
        self.net: podnet.Network | None = None
        self.node_configs = {n.name: n for n in config.nodes}
        self.failed_nodes: set[str] = set()
        self.workers: dict[str, PodWorker] = {}
        self.virtual: dict[str, Obj] = {}
        self.virtual_index = 0
        self.virtual_ips: dict[str, str] = {}
        """Each virtual pod's address, fixed when it is first seen."""
        self.free_slots: list[int] = []
        self.next_slot = 0
        self.dirty: set[str] = set()
        self.written: dict[str, Obj] = {}
        """The status last sent per pod uid (unchanged statuses are not sent again)."""
        self.dirty_event = asyncio.Event()
        self.records: dict[str, list[tuple[str, list[str]]]] = {}
        self.hosts_dirty = asyncio.Event()
        self.recorder = events.Recorder(api, "kubelet")
        self.port = 0
        self.since = _iso()
        self.caches = caches
        self.pods = caches["pods"]
        self.configmaps = caches["configmaps"]
        self.secrets = caches["secrets"]
        self.endpoints = caches["endpoints"]
        self.nodes = caches["nodes"]
        self.tasks: list[asyncio.Task[Any]] = []
        self.background: set[asyncio.Task[Any]] = set()
        self.relay: asyncio.Server | None = None
        self.pod_api_url: str | None = None
        self.pod_api_ca: bytes | None = None
        """The cluster CA (PEM) pods trust when the API server speaks HTTPS."""

    def _spawn(self, coro: Any) -> None:
        """Run ``coro`` in the background, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    # -- Host protocol for pod workers -------------------------------------
    def now(self) -> str:
        """An RFC 3339 timestamp."""
        return _iso()

    async def service_account_token(self, namespace: str, name: str) -> str | None:
        """A token for the pod's ServiceAccount (TokenRequest); None if the account is missing
        (the pod then has no identity: admin on a plain-HTTP cluster, nobody in RBAC mode;
        see pot.localcluster.authorizing)."""
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"
        try:
            reply = await self.api.create(path, {"kind": "TokenRequest", "spec": {}})
        except errors.ClusterError as exc:
            log.warning("no token for ServiceAccount %s/%s: %s", namespace, name, exc)
            return None
        token = (reply.get("status") or {}).get("token")
        return token if isinstance(token, str) else None

    def lookup(self, kind: str, namespace: str) -> Mapping[str, Obj]:
        """ConfigMaps or Secrets of ``namespace`` by name."""
        informer = self.configmaps if kind == "configmaps" else self.secrets
        prefix = f"{namespace}/"
        return {k[len(prefix) :]: v for k, v in informer.cache.items() if k.startswith(prefix)}

    def node_allocatable(self, node: str) -> Mapping[str, str]:
        """Allocatable resources of ``node`` (for resourceFieldRef without limits)."""
        config = self.node_configs.get(node)
        return nodes.capacity(config) if config else {}

    def host_ip(self) -> str:
        """The node address pods see as status.hostIP."""
        return "127.0.0.1"

    def base_env(self, pod: Obj) -> dict[str, str]:
        """Environment every container starts from (before its own env)."""
        spec = pod.get("spec") or {}
        env = {
            "PATH": f"{self.venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOSTNAME": spec.get("hostname") or pod["metadata"]["name"],
            "HOME": "/root",
            "LANG": "C.UTF-8",
            # Convenience beyond Kubernetes: Python output reaches `kubectl logs` at once.
            "PYTHONUNBUFFERED": "1",
        }
        if os.environ.get("VIRTUAL_ENV") or Path(self.venv_bin, "activate").exists():
            env["VIRTUAL_ENV"] = str(Path(self.venv_bin).parent)
        return env

    def hosts_for(self, pod: Obj, ip: str) -> str:
        """The pod's /etc/hosts."""
        return podhosts.render(pod, ip, self.records)

    def status_changed(self, worker: PodWorker) -> None:
        """Queue a status write for ``worker``'s pod."""
        self.dirty.add(worker.uid)
        self.dirty_event.set()

    def event(self, pod: Obj, reason: str, message: str, kind: str = "Normal") -> None:
        """Record an event about ``pod``."""
        self.recorder.emit(pod, reason, message, kind, host=pod["spec"].get("nodeName", ""))

    def allocate_slot(self) -> int:
        """A free pod network slot."""
        if self.free_slots:
            return self.free_slots.pop(0)  # oldest first: a freed IP rests before reuse
        if self.net is not None and self.next_slot >= self.net.slots:
            raise errors.ClusterError(f"pod network {self.net.subnet} is full")
        self.next_slot += 1
        return self.next_slot - 1

    def release_slot(self, slot: int) -> None:
        """Give a slot back."""
        self.free_slots.append(slot)

    # -- startup -----------------------------------------------------------
    def cleanup_leftovers(self) -> None:
        """Remove what a previous kubelet of this cluster left (processes, netns)."""
        tag = podnet.tag(self.config.cluster_dir)
        killed = containers.kill_marked(tag)
        if killed:
            log.info("killed %d leftover container processes", killed)
        for ns in podnet.leftover_namespaces(tag):
            subprocess_run(["ip", "netns", "del", ns])

    async def run(self) -> None:
        """Serve until cancelled; on cancel, stop every pod's processes."""
        from pot.localcluster import kubeletserver

        self.cleanup_leftovers()
        https = self.api.endpoint.server.startswith("https")
        if https:  # RBAC mode: pods trust the cluster CA (pot.localcluster.pki)
            self.pod_api_ca = pki.ca_pem(self.config.cluster_dir)
        if self.config.pod_network:
            self.net = podnet.ensure_network(self.state_dir, self.config.cluster_dir)
            tls = apiforward.relay_tls(self.config.cluster_dir, self.net.gateway) if https else None
            try:
                relay, port = await apiforward.start(
                    self.net.gateway, self.api.endpoint.server, tls
                )
                self.relay = relay
                scheme = "https" if tls else "http"
                self.pod_api_url = f"{scheme}://{self.net.gateway}:{port}"
            except OSError as exc:
                log.warning("pods cannot reach the API server: %s", exc)
        else:
            self.pod_api_url = self.api.endpoint.server
        server = kubeletserver.Server(self)
        self.port = await server.start()
        try:
            await self._register_nodes()
            self.endpoints.add_handler(self._on_endpoints)
            self.nodes.add_handler(self._on_node)
            await self.caches.wait_synced(["configmaps", "secrets", "nodes", "endpoints"])
            # Pods last: their workers need ConfigMaps, Secrets and DNS records at once.
            self.pods.add_handler(self._on_pod)
            for pod in list(self.pods.cache.values()):
                self._on_pod("ADDED", pod)
            self._remove_orphaned_pod_dirs()
            self.tasks.append(asyncio.create_task(self._heartbeats()))
            self.tasks.append(asyncio.create_task(self._write_statuses()))
            self.tasks.append(asyncio.create_task(self._resync_statuses()))
            self.tasks.append(asyncio.create_task(self._refresh_hosts()))
            self._on_endpoints("ADDED", {})
            await asyncio.gather(*self.tasks)
        finally:
            for task in self.tasks:
                task.cancel()
            await self.shutdown()
            await server.stop()
            if self.relay is not None:
                self.relay.close()

    def _remove_orphaned_pod_dirs(self) -> None:
        """Directories of pods no longer bound here (deleted while no kubelet ran, evicted
        while their node was down) go, with their logs and emptyDirs."""
        known = {worker.dir.name for worker in self.workers.values()}
        for pod in self.pods.cache.values():
            if (pod.get("spec") or {}).get("nodeName") in self.node_configs:
                meta = pod["metadata"]
                known.add(f"{meta['namespace']}_{meta['name']}_{meta.get('uid', '')[:8]}")
        with contextlib.suppress(FileNotFoundError):
            for path in (self.state_dir / "pods").iterdir():
                if path.name not in known:
                    shutil.rmtree(path, ignore_errors=True)

    async def shutdown(self) -> None:
        """Kill every container and remove pod namespaces (kubelet stop, `down`)."""
        for worker in list(self.workers.values()):
            worker.kill_now()
        for worker in list(self.workers.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(worker.terminate(0), timeout=5)
        self.workers.clear()

    async def _register_nodes(self) -> None:
        for config in self.node_configs.values():
            body = nodes.node_object(config)
            path = apiclient.path_for("v1", "nodes")
            try:
                await self.api.create(path, body)
            except apiclient.ApiFailure as exc:
                if exc.code != 409:
                    raise
                await self.api.patch(
                    apiclient.path_for("v1", "nodes", name=config.name),
                    {"metadata": {"labels": body["metadata"]["labels"]}, "spec": body["spec"]},
                )
            await self._heartbeat(config)

    async def _heartbeat(self, config: nodes.NodeConfig) -> None:
        status = nodes.ready_status(
            config, now=_iso(), ready=True, since=self.since, address="127.0.0.1"
        )
        status["daemonEndpoints"] = {"kubeletEndpoint": {"Port": self.port}}
        await self.api.patch(
            apiclient.path_for("v1", "nodes", name=f"{config.name}/status"), {"status": status}
        )

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat)
            for config in self.node_configs.values():
                if config.name in self.failed_nodes:
                    continue
                try:
                    await self._heartbeat(config)
                except errors.ClusterError as exc:
                    log.warning("heartbeat of %s failed: %s", config.name, exc)

    # -- pods --------------------------------------------------------------
    def _mine(self, pod: Obj) -> str | None:
        node = (pod.get("spec") or {}).get("nodeName")
        if node in self.node_configs and node not in self.failed_nodes:
            return str(node)
        return None

    def _on_pod(self, kind: str, pod: Obj) -> None:
        node = self._mine(pod)
        uid = pod["metadata"].get("uid", "")
        if node is None and uid not in self.workers and uid not in self.virtual:
            return
        if kind == "DELETED":
            worker = self.workers.pop(uid, None)
            self.virtual.pop(uid, None)
            self.virtual_ips.pop(uid, None)
            if worker is not None:
                self._spawn(self._stop(worker, grace=2, delete=False))
            return
        if node is not None and self.node_configs[node].virtual:
            self._on_virtual_pod(pod)
            return
        worker = self.workers.get(uid)
        if worker is None:
            if node is None:
                return
            worker = PodWorker(self, pod)
            self.workers[uid] = worker
            if kubelet_status_terminal(pod):
                # Finished under a previous kubelet: nothing runs, but its logs are served
                # and its directory goes with it.
                worker.keep_finished()
                return
            worker.start()
        else:
            worker.pod["metadata"] = pod["metadata"]
            worker.pod["spec"] = pod["spec"]
        deleting = pod["metadata"].get("deletionTimestamp")
        if deleting and not worker.stopping.is_set():
            grace = pod["metadata"].get("deletionGracePeriodSeconds")
            self._spawn(self._stop(worker, grace=grace, delete=True))

    async def _stop(self, worker: PodWorker, *, grace: float | None, delete: bool) -> None:
        try:
            await worker.terminate(grace)
            if delete:
                meta = worker.pod["metadata"]
                await apiclient.ignore_missing(
                    self.api.delete(
                        apiclient.path_for("v1", "pods", meta["namespace"], meta["name"]),
                        grace=0,
                        uid=worker.uid,
                    )
                )
        except errors.ClusterError as exc:
            log.warning("finishing deletion of %s: %s", worker.key, exc)
        finally:
            self.workers.pop(worker.uid, None)
            self.dirty.discard(worker.uid)
            worker.remove_files()

    async def finish_deletion(self, worker: PodWorker) -> None:
        """Remove the pod object once its containers are gone."""
        await self._stop(worker, grace=0, delete=True)

    def _on_virtual_pod(self, pod: Obj) -> None:
        uid = pod["metadata"]["uid"]
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            self.virtual.pop(uid, None)
            self.virtual_ips.pop(uid, None)
            path = apiclient.path_for("v1", "pods", meta["namespace"], meta["name"])
            self._spawn(apiclient.ignore_missing(self.api.delete(path, grace=0, uid=uid)))
            return
        if uid in self.virtual:
            return
        self.virtual_ips[uid] = podnet.virtual_address(self.virtual_index)
        self.virtual_index += 1
        self.virtual[uid] = pod
        self.dirty.add(uid)
        self.dirty_event.set()

    def _virtual_status(self, pod: Obj) -> Obj:
        states = []
        now = _iso()
        spec = pod.get("spec") or {}
        for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
            kind = (
                "regular"
                if c in (spec.get("containers") or [])
                else ("sidecar" if c.get("restartPolicy") == "Always" else "init")
            )
            state = kubelet_status.ContainerState(
                name=c["name"], image=c.get("image", ""), kind=kind
            )
            if kind == "init":
                state.state = {
                    "terminated": {
                        "exitCode": 0,
                        "reason": "Completed",
                        "startedAt": now,
                        "finishedAt": now,
                    }
                }
            else:
                state.state = {"running": {"startedAt": now}}
                state.ready = state.started = True
            states.append(state)
        return kubelet_status.build(
            pod,
            states,
            pod_ip=self.virtual_ips[pod["metadata"]["uid"]],
            host_ip=self.host_ip(),
            start_time=now,
            initialized=True,
            init_failed=False,
            sandbox_ready=True,
            now=now,
        )

    async def _write_statuses(self) -> None:
        written = self.written
        while True:
            await self.dirty_event.wait()
            await asyncio.sleep(0.02)  # coalesce bursts
            self.dirty_event.clear()
            batch, self.dirty = self.dirty, set()
            jobs = []
            for uid in batch:
                worker = self.workers.get(uid)
                if worker is not None:
                    pod, status = worker.pod, worker.status()
                elif uid in self.virtual:
                    pod = self.virtual[uid]
                    status = self._virtual_status(pod)
                else:
                    continue
                if written.get(uid) == status:
                    continue
                written[uid] = status
                jobs.append(self._patch_status(pod, status))
            for i in range(0, len(jobs), 32):
                await asyncio.gather(*jobs[i : i + 32])
            for uid in list(written):
                if uid not in self.workers and uid not in self.virtual:
                    del written[uid]

    async def _resync_statuses(self, every: float = 3.0) -> None:
        """Like the kubelet's status manager: send a pod's status again when the API server's
        differs from it (a write failed while the API server was down; the node lifecycle
        marked the pods of a node not ready whose heartbeats only ran late)."""
        while True:
            await asyncio.sleep(every)
            for uid, sent in list(self.written.items()):
                worker = self.workers.get(uid)
                pod = worker.pod if worker is not None else self.virtual.get(uid)
                if pod is None:
                    continue
                current = self.pods.cache.get(apiclient.key_of(pod))
                if current is None or current["metadata"].get("uid") != uid:
                    continue
                if kubelet_status.summary(current.get("status") or {}) != kubelet_status.summary(
                    sent
                ):
                    self.written.pop(uid, None)
                    self.dirty.add(uid)
                    self.dirty_event.set()

    async def _patch_status(self, pod: Obj, status: Obj) -> None:
        meta = pod["metadata"]
        path = apiclient.path_for("v1", "pods", meta["namespace"], f"{meta['name']}/status")
        try:
            await apiclient.ignore_missing(self.api.patch(path, {"status": status}))
        except errors.ClusterError as exc:
            log.warning("status of %s/%s not written: %s", meta["namespace"], meta["name"], exc)

    # -- DNS ---------------------------------------------------------------
    def _on_endpoints(self, _kind: str, _obj: Obj) -> None:
        self.hosts_dirty.set()

    async def _refresh_hosts(self) -> None:
        while True:
            await self.hosts_dirty.wait()
            await asyncio.sleep(0.05)
            self.hosts_dirty.clear()
            self.records = podhosts.service_records(self.endpoints.cache.values())
            for worker in list(self.workers.values()):
                with contextlib.suppress(OSError):
                    worker.write_hosts()

    # -- simulated node failure -------------------------------------------
    def _on_node(self, kind: str, node: Obj) -> None:
        name = node["metadata"]["name"]
        if name not in self.node_configs:
            return
        failed = (node["metadata"].get("annotations") or {}).get(nodes.SIMULATED_FAILURE) == "true"
        if failed and name not in self.failed_nodes:
            log.warning("node %s: simulated failure, killing its pods", name)
            self.failed_nodes.add(name)
            for uid, worker in list(self.workers.items()):
                if worker.pod["spec"].get("nodeName") == name:
                    worker.kill_now()
                    self.workers.pop(uid, None)
                    self.dirty.discard(uid)
                    self._spawn(worker.terminate(0))
            for uid, pod in list(self.virtual.items()):
                if pod["spec"].get("nodeName") == name:
                    self.virtual.pop(uid, None)
                    self.virtual_ips.pop(uid, None)
        elif not failed and name in self.failed_nodes:
            log.warning("node %s: recovered", name)
            self.failed_nodes.discard(name)
            config = self.node_configs[name]
            self._spawn(self._heartbeat(config))
            for pod in list(self.pods.cache.values()):
                if pod["spec"].get("nodeName") == name:
                    self._on_pod("MODIFIED", pod)
            self._remove_orphaned_pod_dirs()


def kubelet_status_terminal(pod: Obj) -> bool:
    """A pod already Succeeded/Failed is not started again (e.g. after a restart)."""
    return (pod.get("status") or {}).get("phase") in {"Succeeded", "Failed"}


def subprocess_run(argv: list[str]) -> None:
    """Run a cleanup command, ignoring failure."""
    import subprocess

    subprocess.run(argv, capture_output=True, check=False)
