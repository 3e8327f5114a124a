"""kopf handlers: thin. They feed the runtime's caches and queue keys; workers reconcile.

Why event handlers and a work queue rather than kopf's create/update/resume
handlers and per-object daemons: those persist handler progress in
annotations and add a finalizer to every object (two to four extra API writes
per task, and a task that cannot be deleted while the operator is down).
Here kopf is the watcher: ``on.event`` covers create, update, resume (the
initial listing after a restart replays every object) and delete; children
are garbage-collected through ownerReferences, so no finalizer is needed.
Reconciles are level-triggered and idempotent (see ``task_reconciler``), the
work queue deduplicates bursts, and periodic progress is a delayed re-queue.

Startup: log in (kubeconfig or in-cluster service account), take the leader
Lease (blocking a standby here, before kopf starts any watch), start the
workers and the /metrics + /healthz server. Cleanup: stop acting, release the
Lease, close the clients (kopf runs it on SIGTERM: graceful shutdown).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import time
import typing
from typing import Any

import kopf
from aiohttp import web

from pot import errors, keys, observability
from pot.operator import (
    config as configuration,
)
from pot.operator import (
    kubeapi,
    leadership,
    metrics,
    names,
    queueing,
    runtime,
    task_reconciler,
    usage_watching,
    validators_client,
    vset_reconciler,
)

log = logging.getLogger("pot.operator")


def _connection(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account first, else the kubeconfig (KUBECONFIG)."""
    return _connection(**kwargs)


async def _worker(
    rt: runtime.Runtime,
    queue: queueing.WorkQueue,
    kube: kubeapi.Client,
    vclient: validators_client.Client,
) -> None:
    failures: dict[Any, int] = {}
    while True:
        key = await queue.get()
        kind, ns, name = typing.cast(runtime.Key, key)
        started = time.perf_counter()
        try:
            if not rt.active:
                continue
            if kind == runtime.TASK:
                await task_reconciler.reconcile(rt, kube, vclient, ns, name)
            else:
                await vset_reconciler.reconcile(rt, kube, vclient, ns, name)
            failures.pop(key, None)
            metrics.RECONCILES.labels(kind, "ok").inc()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            count = failures[key] = failures.get(key, 0) + 1
            delay = min(0.5 * 2 ** min(count, 6), 30.0)
            metrics.RECONCILES.labels(kind, "error").inc()
            metrics.ERRORS.labels(kind, type(exc).__name__).inc()
            if isinstance(exc, errors.PotError):
                log.warning("%s %s/%s: %s (retry in %.1fs)", kind, ns, name, exc, delay)
            else:
                log.exception("%s %s/%s: unexpected error (retry in %.1fs)", kind, ns, name, delay)
            queue.add(key, delay)
        finally:
            queue.done(key)
            metrics.RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)
            metrics.QUEUE_DEPTH.set(len(rt.queue) + len(rt.vset_queue))


async def _gauges(rt: runtime.Runtime) -> None:
    while True:
        counts: dict[str, int] = {}
        for body in list(rt.tasks.values()):
            phase = (body.get("status") or {}).get("phase") or "Pending"
            counts[phase] = counts.get(phase, 0) + 1
        for phase in (
            "Pending",
            "Scheduling",
            "Training",
            "Verifying",
            "Settling",
            "Succeeded",
            "Failed",
        ):
            metrics.TASKS.labels(phase).set(counts.get(phase, 0))
        vcounts: dict[str, int] = {}
        for body in list(rt.vsets.values()):
            phase = (body.get("status") or {}).get("phase") or "Pending"
            vcounts[phase] = vcounts.get(phase, 0) + 1
        for phase in ("Pending", "Progressing", "Ready", "Degraded", "Failed"):
            metrics.VSETS.labels(phase).set(vcounts.get(phase, 0))
        await asyncio.sleep(5)


async def _prime(rt: runtime.Runtime, kube: kubeapi.Client) -> str | None:
    """List what reconciles read before any worker runs (controller-runtime's
    WaitForCacheSync): without it, a task reconciled right after a restart could
    find its ValidatorSet or Secret "missing" only because the watch had not
    delivered it yet, and fail for nothing. With watched namespaces, the pods
    holding node room elsewhere too (``usage_watching``): returns the
    resourceVersion its watch starts from ("" to list again; None: not needed)."""
    namespaces: list[str | None] = list(rt.config.namespaces) or [None]
    await _list_into(kube, "v1", "nodes", None, kind="Node", observe=rt.observe_node)
    usage_rv: str | None = None
    if rt.config.namespaces:
        try:
            usage_rv = await usage_watching.list_into(kube, rt)
        except kubeapi.ApiError as exc:  # e.g. 403: the chart's -node-usage binding is missing
            log.error(
                "cannot list pods cluster-wide for node usage (%s): gangs may be released "
                "onto GPUs that pods outside %s hold; retrying",
                exc,
                ",".join(rt.config.namespaces),
            )
            usage_rv = ""
    for ns in namespaces:
        await _list_into(kube, "v1", "secrets", ns, kind="Secret", observe=rt.observe_secret)
        await _list_into(kube, "v1", "pods", ns, kind="Pod", observe=rt.observe_pod)
        await _list_into(
            kube, names.API_VERSION, names.VSETS, ns, kind="ValidatorSet", observe=rt.observe_vset
        )
        await _list_into(
            kube, names.API_VERSION, names.TASKS, ns, kind="TrainingTask", observe=rt.observe_task
        )
    return usage_rv


async def _list_into(
    kube: kubeapi.Client, api_version: str, plural: str, ns: str | None, *, kind: str, observe: Any
) -> None:
    doc = await kube.request("GET", kubeapi.path(api_version, plural, ns), kind=plural)
    for item in doc.get("items") or []:
        item.setdefault("apiVersion", api_version)
        item.setdefault("kind", kind)
        observe(item, False)


async def _serve(rt: runtime.Runtime, port: int) -> web.AppRunner:
    app = web.Application()

    def ready() -> tuple[bool, str]:
        if not rt.active:
            return False, "standby (waiting for the leader Lease)"
        return (True, "leading") if rt.primed else (False, "listing the cluster")

    observability.add_routes(app, ready=ready)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()  # noqa: S104 - probed by the kubelet
    return runner


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    """Configure, elect, start workers."""
    cfg = configuration.from_env()
    if not cfg.stake_check:
        log.warning(
            "POT_STAKE_CHECK=0: tasks are admitted without reading their miners' stakes on "
            "chain, so a miner who never staked is paid and cheats at no cost. For test "
            "stacks without a chain only; never in production"
        )
    signer = None
    if cfg.operator_key_file:
        signer = keys.from_file(cfg.operator_key_file)  # KeyLoadError names the file, not the key
        cfg = dataclasses.replace(cfg, operator_address=signer.address)
        log.info("signing task registrations as %s", signer.address)
    else:
        log.warning(
            "no POT_OPERATOR_KEY_FILE: task registrations go unsigned, and only ValidatorSets "
            "whose peers.json names no operator accept them"
        )
    settings.posting.enabled = False  # our own Events, one per transition
    settings.peering.standalone = True  # the Lease elects; kopf peering is not used
    settings.watching.server_timeout = 300
    info = _connection(settings=settings, **kwargs)
    if info is None:
        raise kopf.PermanentError(
            "no Kubernetes credentials: neither a service account nor a kubeconfig"
        )
    kube = kubeapi.Client()
    kube.configure(info)
    rt = runtime.Runtime(cfg)
    vclient = validators_client.Client(timeout=cfg.http_timeout, signer=signer)
    memo.rt, memo.kube, memo.vclient = rt, kube, vclient
    memo.tasks = []
    if cfg.metrics_port:  # before the election: a standby must answer its liveness probe
        memo.server = await _serve(rt, cfg.metrics_port)
    if cfg.leader_election:
        elector = leadership.Elector(
            kube,
            namespace=cfg.lease_namespace,
            name=cfg.lease_name,
            identity=cfg.identity,
            duration=cfg.lease_duration,
        )
        memo.elector = elector
        rt.active = False
        await elector.acquire()
        rt.active = True

        def lost() -> None:
            rt.active = False
            metrics.LEADER.set(0)
            os.kill(os.getpid(), signal.SIGTERM)  # exit; the Deployment restarts us as a standby

        memo.tasks.append(asyncio.create_task(elector.keep(lost)))
    metrics.LEADER.set(1)
    usage_rv = await _prime(rt, kube)
    rt.primed = True
    if usage_rv is not None:
        memo.tasks.append(asyncio.create_task(usage_watching.run(kube, rt, usage_rv)))
    memo.tasks += [
        asyncio.create_task(_worker(rt, rt.queue, kube, vclient)) for _ in range(cfg.workers)
    ]
    memo.tasks += [asyncio.create_task(_worker(rt, rt.vset_queue, kube, vclient)) for _ in range(2)]
    memo.tasks.append(asyncio.create_task(_gauges(rt)))


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Stop acting, release the Lease, close clients."""
    rt: runtime.Runtime | None = getattr(memo, "rt", None)
    if rt is None:
        return
    rt.active = False
    for task in memo.tasks:
        task.cancel()
    await asyncio.gather(*memo.tasks, return_exceptions=True)
    if getattr(memo, "elector", None) is not None:
        await memo.elector.release()
    if getattr(memo, "server", None) is not None:
        await memo.server.cleanup()
    await memo.vclient.close()
    await memo.kube.close()


def _feed(memo: Any, event: Any, what: str) -> None:
    rt: runtime.Runtime | None = getattr(memo, "rt", None)
    obj = event.get("object")
    if rt is None or not isinstance(obj, dict) or not obj.get("metadata"):
        return
    getattr(rt, f"observe_{what}")(obj, event.get("type") == "DELETED")


@kopf.on.event(names.GROUP, names.VERSION, names.TASKS)
def task_event(event: Any, memo: Any, **_: Any) -> None:
    """TrainingTask added/changed/deleted (also every task at startup: resume)."""
    _feed(memo, event, "task")


@kopf.on.event(names.GROUP, names.VERSION, names.VSETS)
def vset_event(event: Any, memo: Any, **_: Any) -> None:
    """ValidatorSet added/changed/deleted."""
    _feed(memo, event, "vset")


@kopf.on.event("", "v1", "pods")
def pod_event(event: Any, memo: Any, **_: Any) -> None:
    """Any pod in the watched namespaces: node usage for gang fit; ours wake their
    task or ValidatorSet (pods elsewhere: ``usage_watching``)."""
    _feed(memo, event, "pod")


@kopf.on.event("", "v1", "nodes")
def node_event(event: Any, memo: Any, **_: Any) -> None:
    """Nodes: allocatable, readiness, labels and taints for gang fit."""
    _feed(memo, event, "node")


@kopf.on.event("", "v1", "secrets")
def secret_event(event: Any, memo: Any, **_: Any) -> None:
    """Secrets: only the key names are kept (miner keys present for every rank?)."""
    _feed(memo, event, "secret")
