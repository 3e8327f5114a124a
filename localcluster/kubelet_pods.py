"""One pod's life on the process kubelet: sandbox, init containers, containers.

A ``PodWorker`` owns everything of one pod: its network namespace and IP, its
``/etc/hosts``, its volume directories, one supervisor task per container
(start, wait, restart with CrashLoopBackOff back-off) and that container's
probe tasks. It reports status through the kubelet (``Host``), which batches
writes to the API server. Deletion follows the kubelet: SIGTERM, the grace
period, SIGKILL, then the pod object is removed with grace 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from pot.localcluster import (
    apiforward,
    containers,
    kubelet_status,
    kubelet_volumes,
    podnet,
    podspecs,
    probing,
)
from pot.localcluster.kubelet_status import ContainerState

log = logging.getLogger(__name__)
Obj = dict[str, Any]


class Host(Protocol):
    """What a pod worker needs from its kubelet."""

    state_dir: Path
    venv_bin: str
    backoff_base: float
    backoff_max: float
    net: podnet.Network | None
    pod_api_url: str | None
    pod_api_ca: bytes | None

    def now(self) -> str: ...
    def lookup(self, kind: str, namespace: str) -> Mapping[str, Obj]: ...
    async def service_account_token(self, namespace: str, name: str) -> str | None: ...
    def node_allocatable(self, node: str) -> Mapping[str, str]: ...
    def host_ip(self) -> str: ...
    def base_env(self, pod: Obj) -> dict[str, str]: ...
    def hosts_for(self, pod: Obj, ip: str) -> str: ...
    def status_changed(self, worker: PodWorker) -> None: ...
    def event(self, pod: Obj, reason: str, message: str, kind: str = "Normal") -> None: ...
    def allocate_slot(self) -> int: ...
    def release_slot(self, slot: int) -> None: ...
    async def finish_deletion(self, worker: PodWorker) -> None: ...


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Container:
    """Supervision state of one container."""

    def __init__(self, spec: Obj, kind: str) -> None:
        self.spec = spec
        self.status = ContainerState(name=spec["name"], image=spec.get("image", ""), kind=kind)
        self.running: containers.Running | None = None
        self.process_spec: podspecs.ProcessSpec | None = None
        self.crashes = 0
        self.done = asyncio.Event()  # init containers: completed successfully
        self.started_event = asyncio.Event()  # sidecars: started (startup probe passed)
        self.kill_reason = ""
        self.resumed = False  # counts continue from a previous kubelet
        self.finished = False  # a previous kubelet ran it to its end: not run again
        self.probe_tasks: list[asyncio.Task[None]] = []


class PodWorker:
    """Runs one pod until it is deleted (or the kubelet stops)."""

    def __init__(self, host: Host, pod: Obj) -> None:
        self.host = host
        # Its own copy: the worker writes status fields (podIP, conditions) into it, and the
        # informer's cached object is what the scheduler and controllers read.
        self.pod = copy.deepcopy(pod)
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.key = f"{meta['namespace']}/{meta['name']}"
        self.dir = host.state_dir / "pods" / f"{meta['namespace']}_{meta['name']}_{self.uid[:8]}"
        spec = pod.get("spec") or {}
        self.containers: dict[str, Container] = {}
        for c in spec.get("initContainers") or []:
            kind = "sidecar" if c.get("restartPolicy") == "Always" else "init"
            self.containers[c["name"]] = Container(c, kind)
        for c in spec.get("containers") or []:
            self.containers[c["name"]] = Container(c, "regular")
        # A pod that already ran (a kubelet restart killed its processes):
        # carry its restart counts on, so logs and counts stay monotonic, and
        # run nothing again that its restartPolicy forbids (kubelet_status.adopted_state).
        status = pod.get("status") or {}
        previous = (status.get("containerStatuses") or []) + (
            status.get("initContainerStatuses") or []
        )
        policy = spec.get("restartPolicy", "Always")
        pod_ran = any(prev.get("containerID") for prev in previous)
        self.over = False
        """Nothing of this pod runs again: a previous kubelet ran it to its end, or it is a
        ``Never`` pod whose containers had started."""
        for prev in previous:
            c = self.containers.get(prev.get("name", ""))
            if c is None or not prev.get("containerID"):
                continue
            final = kubelet_status.adopted_state(
                prev, kind=c.status.kind, restart_policy=policy, pod_ran=pod_ran
            )
            if final:
                c.status.state = final
                c.status.last_state = dict(prev.get("lastState") or {})
                c.status.restart_count = int(prev.get("restartCount", 0))
                c.status.container_id = prev.get("containerID", "")
                c.status.will_restart = False
                c.finished = True
                continue
            c.status.restart_count = int(prev.get("restartCount", 0)) + 1
            c.resumed = True
        regular = [c for c in self.containers.values() if c.status.kind == "regular"]
        if (policy == "Never" and pod_ran) or (regular and all(c.finished for c in regular)):
            self.over = True
            by_name = {prev.get("name"): prev for prev in previous}
            for c in self.containers.values():  # sidecars, inits, those that never started
                if not c.finished:
                    prev = by_name.get(c.status.name) or {}
                    term = (prev.get("state") or {}).get("terminated")
                    c.status.state = {"terminated": dict(term or kubelet_status.UNKNOWN)}
                    c.status.restart_count = max(0, c.status.restart_count - c.resumed)
                    c.status.will_restart = False
                    c.finished = True
        self.slot: int | None = None
        self.ip: str | None = None
        self.netns: str | None = None
        self.hosts_file: Path | None = None
        self.volume_dirs: dict[str, str] = {}
        self.service_account_dir: str | None = None
        self.start_time = _now_iso()
        self.initialized = False
        self.init_failed = False
        self.sandbox_ready = False
        self.message = ""
        self.reason = ""
        self.stopping = asyncio.Event()
        self.sidecars_stopping = asyncio.Event()  # the regular containers are all done
        self.task: asyncio.Task[None] | None = None
        self.tasks: list[asyncio.Task[Any]] = []

    # -- status -----------------------------------------------------------
    def status(self) -> Obj:
        """The pod status to report now."""
        status = kubelet_status.build(
            self.pod,
            [c.status for c in self.containers.values()],
            pod_ip=self.ip,
            host_ip=self.host.host_ip(),
            start_time=self.start_time,
            initialized=self.initialized,
            init_failed=self.init_failed,
            sandbox_ready=self.sandbox_ready,
            now=self.host.now(),
            message=self.message,
            reason=self.reason,
        )
        # What was reported is the previous status of the next report: a condition's
        # lastTransitionTime then moves only when the condition does.
        self.pod.setdefault("status", {})["conditions"] = status["conditions"]
        return status

    def changed(self) -> None:
        """Tell the kubelet this pod's status should be written."""
        self.host.status_changed(self)

    @property
    def terminal(self) -> bool:
        """Succeeded or Failed: nothing will run again."""
        return self.status()["phase"] in {"Succeeded", "Failed"}

    # -- lifecycle --------------------------------------------------------
    def keep_finished(self) -> None:
        """A pod that ended under a previous kubelet: report nothing, run nothing (its
        containers' instances as the API server records them, for their logs)."""
        status = self.pod.get("status") or {}
        for prev in (status.get("containerStatuses") or []) + (
            status.get("initContainerStatuses") or []
        ):
            c = self.containers.get(prev.get("name", ""))
            if c is not None:
                c.status.restart_count = int(prev.get("restartCount", 0))
                c.status.state = dict(prev.get("state") or {})
                c.finished = True
        self.over = True

    def start(self) -> None:
        """Begin running the pod in the background."""
        self.task = asyncio.create_task(self._run(), name=f"pod {self.key}")

    async def _run(self) -> None:
        if self.over:  # only its final status to report (see __init__)
            inits = [c for c in self.containers.values() if c.status.kind == "init"]
            self.init_failed = any(c.status.exit_code != 0 for c in inits)
            self.initialized = not self.init_failed
            self.ip = (self.pod.get("status") or {}).get("podIP")
            self.changed()
            return
        try:
            await self._sandbox()
            await self._run_inits()
            if self.stopping.is_set():
                return
            if self.init_failed:  # the pod Failed: the sidecars started so far stop
                await self._stop_sidecars()
                await asyncio.gather(*self.tasks, return_exceptions=True)
                return
            self.initialized = True
            self.changed()
            regular = [
                asyncio.create_task(self._supervise(c))
                for c in self.containers.values()
                if c.status.kind == "regular" and not c.finished
            ]
            self.tasks.extend(regular)
            await asyncio.gather(*regular, return_exceptions=True)
            if not self.stopping.is_set():
                # Every regular container is done for good (the pod Succeeded or Failed):
                # its sidecars stop, as on Kubernetes, and the sandbox can go.
                await self._stop_sidecars()
            await asyncio.gather(*self.tasks, return_exceptions=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("pod %s failed in the kubelet", self.key)
            self.message = f"kubelet error: {exc}"
            self.changed()
        finally:
            if self.terminal:
                await self._release_sandbox()
                self.changed()

    async def _sandbox(self) -> None:
        pod = self.pod
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.host.net is not None and not (pod.get("spec") or {}).get("hostNetwork"):
            self.slot = self.host.allocate_slot()
            self.netns = self.host.net.netns(self.slot)
            self.ip = await podnet.add_pod(self.host.net, self.slot)
        else:
            self.ip = self.host.host_ip()
        self.hosts_file = self.dir / "hosts"
        self.write_hosts()
        await self._service_account()
        while True:
            try:
                self._prepare_volumes()
                break
            except podspecs.ContainerConfigError as exc:
                # A ConfigMap or Secret may appear later: keep the pod waiting, as kubelet does.
                self._all_waiting("ContainerCreating", f"MountVolume.SetUp failed: {exc}")
                self.host.event(pod, "FailedMount", f"MountVolume.SetUp failed: {exc}", "Warning")
                if await self._sleep(2):
                    return
        self.sandbox_ready = True
        self.changed()

    async def _service_account(self) -> None:
        """Credentials and a kubeconfig for the API server, unless opted out."""
        spec = self.pod.get("spec") or {}
        if spec.get("automountServiceAccountToken") is False or self.host.pod_api_url is None:
            return
        target = self.dir / "serviceaccount"
        ns = self.pod["metadata"]["namespace"]
        token = await self.host.service_account_token(
            ns, spec.get("serviceAccountName") or "default"
        )
        apiforward.write_credentials(
            target, namespace=ns, server=self.host.pod_api_url, token=token, ca=self.host.pod_api_ca
        )
        self.service_account_dir = str(target)

    def write_hosts(self) -> None:
        """(Re)write the pod's /etc/hosts in place, so the bind mount sees it."""
        if self.hosts_file is None or self.ip is None:
            return
        text = self.host.hosts_for(self.pod, self.ip).encode()
        fd = os.open(self.hosts_file, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, text, 0)
        finally:
            os.close(fd)

    def _prepare_volumes(self) -> None:
        ns = self.pod["metadata"]["namespace"]
        self.volume_dirs = kubelet_volumes.prepare(
            self.pod,
            pod_root=self.dir / "volumes",
            claims_root=self.host.state_dir / "volumes",
            configmaps=self.host.lookup("configmaps", ns),
            secrets=self.host.lookup("secrets", ns),
        )

    def _all_waiting(self, reason: str, message: str) -> None:
        for c in self.containers.values():
            if not c.status.running and not c.finished:
                c.status.state = {"waiting": {"reason": reason, "message": message}}
        self.changed()

    async def _sleep(self, seconds: float, c: Container | None = None) -> bool:
        """Sleep unless the pod (or sidecar ``c``) is stopping; True when it is."""
        events = [self.stopping]
        if c is not None and c.status.kind == "sidecar":
            events.append(self.sidecars_stopping)
        waiters = [asyncio.ensure_future(e.wait()) for e in events]
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()
        return self._halted(c) if c is not None else self.stopping.is_set()

    def _halted(self, c: Container) -> bool:
        """``c`` must not run (again): the pod is stopping, or ``c`` is a sidecar of a pod
        whose regular containers are all done."""
        return self.stopping.is_set() or (
            c.status.kind == "sidecar" and self.sidecars_stopping.is_set()
        )

    async def _stop_sidecars(self) -> None:
        """Stop the sidecars, the last started first, each with the grace period."""
        self.sidecars_stopping.set()
        for c in reversed(self.containers.values()):
            if c.status.kind == "sidecar" and c.running is not None:
                self.host.event(self.pod, "Killing", f"Stopping container {c.status.name}")
                await containers.stop(c.running, self.grace())

    async def _run_inits(self) -> None:
        policy = (self.pod.get("spec") or {}).get("restartPolicy", "Always")
        for c in self.containers.values():
            if self.stopping.is_set():
                return
            if c.status.kind == "sidecar":
                self.tasks.append(asyncio.create_task(self._supervise(c)))
                waiter = asyncio.create_task(c.started_event.wait())
                stop = asyncio.create_task(self.stopping.wait())
                await asyncio.wait({waiter, stop}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stop.cancel()
            elif c.status.kind == "init":
                task = asyncio.create_task(self._supervise(c))
                await task
                if not c.done.is_set():
                    if policy == "Never" or c.status.exit_code not in (None, 0):
                        self.init_failed = not self.stopping.is_set()
                        self.changed()
                    return

    # -- one container ----------------------------------------------------
    def _restart_wanted(self, c: Container, code: int) -> bool:
        policy = (self.pod.get("spec") or {}).get("restartPolicy", "Always")
        if c.status.kind == "sidecar":
            return True
        if c.status.kind == "init":
            return code != 0 and policy != "Never"
        return policy == "Always" or (policy == "OnFailure" and code != 0)

    async def _supervise(self, c: Container) -> None:
        name = c.status.name
        first = not c.resumed
        if c.resumed:
            c.status.restart_count -= 1  # the loop adds it back when it starts the instance
        while not self._halted(c):
            if not first:
                delay = (
                    0.0
                    if c.crashes <= 1
                    else min(self.host.backoff_base * 2 ** (c.crashes - 2), self.host.backoff_max)
                )
                if delay:
                    msg = (
                        f"back-off {delay:g}s restarting failed container={name} "
                        f"pod={self.pod['metadata']['name']}_{self.pod['metadata']['namespace']}"
                        f"({self.uid})"
                    )
                    c.status.state = {"waiting": {"reason": "CrashLoopBackOff", "message": msg}}
                    self.changed()
                    self.host.event(
                        self.pod,
                        "BackOff",
                        "Back-off restarting failed container "
                        + f"{name} in pod {self.pod['metadata']['name']}",
                        "Warning",
                    )
                    if await self._sleep(delay, c):
                        return
                c.status.restart_count += 1
            first = False
            try:
                c.process_spec = self._process_spec(c)
            except podspecs.ContainerConfigError as exc:
                c.status.state = {
                    "waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}
                }
                self.changed()
                self.host.event(self.pod, "Failed", f"Error: {exc}", "Warning")
                if c.status.restart_count:
                    c.status.restart_count -= 1
                first = True
                if await self._sleep(2, c):
                    return
                continue
            log_path = self.dir / "logs" / name / f"{c.status.restart_count}.log"
            containers.prune_logs(log_path.parent, c.status.restart_count)
            try:
                c.running = await containers.start(
                    c.process_spec,
                    netns=self.netns,
                    hosts_file=str(self.hosts_file) if self.hosts_file else None,
                    log_path=log_path,
                )
            except OSError as exc:
                c.status.state = {"waiting": {"reason": "RunContainerError", "message": str(exc)}}
                c.crashes += 1
                self.changed()
                continue
            if self._halted(c):  # stopped while it was being started: it must not run on
                await containers.stop(c.running, 0)
            started_at = _now_iso()
            c.status.container_id = f"pot-process://{c.running.pid}"
            c.status.state = {"running": {"startedAt": started_at}}
            c.kill_reason = ""
            self.host.event(self.pod, "Started", f"Started container {name}")
            has_startup = "startupProbe" in c.spec
            c.status.started = not has_startup
            c.status.ready = not has_startup and "readinessProbe" not in c.spec
            if c.status.started:
                c.started_event.set()
            self.changed()
            c.probe_tasks = [
                asyncio.create_task(probing.supervise(self, c, kind))
                for kind in ("startup", "liveness", "readiness")
                if f"{kind}Probe" in c.spec
            ]
            await c.running.process.wait()
            await containers.reap(c.running)
            code = containers.exit_code(c.running.process.returncode)
            for t in c.probe_tasks:
                t.cancel()
            ran = time.time() - c.running.started
            c.running = None
            c.status.ready = False
            c.status.started = False
            reason = "Completed" if code == 0 else "Error"
            c.status.state = {
                "terminated": {
                    "exitCode": code,
                    "reason": reason,
                    "startedAt": started_at,
                    "finishedAt": _now_iso(),
                    "containerID": c.status.container_id,
                }
            }
            c.status.last_state = {}
            if self._halted(c):
                self.changed()
                return
            if code == 0 and c.status.kind == "init":
                c.done.set()
                self.changed()
                return
            if not self._restart_wanted(c, code):
                c.status.will_restart = False
                self.changed()
                return
            c.status.last_state = {"terminated": dict(c.status.state["terminated"])}
            # Back-off resets after a container ran long enough (kubelet: 10 min).
            c.crashes = 1 if ran > max(self.host.backoff_max * 2, 10) else c.crashes + 1
            self.changed()

    def _process_spec(self, c: Container) -> podspecs.ProcessSpec:
        ns = self.pod["metadata"]["namespace"]
        self.pod.setdefault("status", {})["podIP"] = self.ip
        self.pod["status"]["podIPs"] = [{"ip": self.ip}]
        self.pod["status"]["hostIP"] = self.host.host_ip()
        env = self.host.base_env(self.pod)
        spec = podspecs.process_spec(
            self.pod,
            c.spec,
            base_env=env,
            volume_dirs=self.volume_dirs,
            configmaps=self.host.lookup("configmaps", ns),
            secrets=self.host.lookup("secrets", ns),
            node_allocatable=self.host.node_allocatable(self.pod["spec"].get("nodeName", "")),
            venv_bin=self.host.venv_bin,
        )
        spec.env[containers.MARKER] = self.host.net.tag if self.host.net else "local"
        spec.env[containers.INSTANCE] = f"{self.uid}/{c.status.name}/{c.status.restart_count}"
        if self.service_account_dir and not any(m.target == apiforward.MOUNT for m in spec.mounts):
            spec.mounts.append(podspecs.Mount(self.service_account_dir, apiforward.MOUNT, True))
            spec.env.setdefault("KUBECONFIG", f"{apiforward.MOUNT}/kubeconfig")
        return spec

    def exec_argv(self, c: Container, argv: list[str]) -> list[str] | None:
        """argv that runs ``argv`` inside ``c``'s namespaces (None if not running)."""
        if c.running is None:
            return None
        argv = podspecs.resolve_program(list(argv), self.host.venv_bin)
        return ["nsenter", "-t", str(c.running.pid), "-m", "-n", "-u", "--", *argv]

    def grace(self) -> float:
        """The pod's terminationGracePeriodSeconds."""
        return float((self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))

    # -- termination ------------------------------------------------------
    async def terminate(self, grace: float | None) -> None:
        """Stop every container (SIGTERM, ``grace``, SIGKILL) and free the sandbox."""
        self.stopping.set()
        grace = self.grace() if grace is None else grace
        order = [
            [c for c in self.containers.values() if c.status.kind in {"regular", "init"}],
            [c for c in reversed(self.containers.values()) if c.status.kind == "sidecar"],
        ]
        deadline = time.monotonic() + grace
        for group in order:
            stops = []
            for c in group:
                if c.running is not None:
                    self.host.event(self.pod, "Killing", f"Stopping container {c.status.name}")
                    stops.append(containers.stop(c.running, max(0.0, deadline - time.monotonic())))
            await asyncio.gather(*stops)
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self.task, timeout=5)
        await self._release_sandbox()

    def kill_now(self) -> None:
        """SIGKILL everything at once (simulated node failure, kubelet shutdown)."""
        self.stopping.set()
        for c in self.containers.values():
            if c.running is not None:
                containers.kill_now(c.running)

    async def _release_sandbox(self) -> None:
        slot, self.slot = self.slot, None  # taken before awaiting: release runs once
        if slot is not None and self.host.net is not None:
            self.netns = None
            await podnet.remove_pod(self.host.net, slot)
            self.host.release_slot(slot)
        self.sandbox_ready = False

    def remove_files(self) -> None:
        """Delete the pod's directory (logs, volumes other than PVCs)."""
        shutil.rmtree(self.dir, ignore_errors=True)
