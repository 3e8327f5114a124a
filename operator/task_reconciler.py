"""The I/O shell around ``phases.decide`` for one TrainingTask.

Gather a ``World`` from the runtime's caches (no API reads) and the validators'
API, decide, then apply the plan in a crash-safe order: status first (guarded
by resourceVersion), Events, deletes, children, pod creates, releases. Every
write is idempotent, so a kill -9 between any two of them is repaired by the
next reconcile: names are deterministic (a repeated create is a 409, never a
second pod), deletes are uid-preconditioned, releases are plain removals, and
a gang created ungated but cut short by a crash is completed, not restarted
(``phases``: released, never trained, ranks missing).

Two things are settled here, before the first write: the room of a gang about
to be created released (or released) is reserved in the runtime, so that a
count made by another worker while these writes are in flight cannot hand it
out again; and a pod the API server refuses for its spec (422, or a missing
PriorityClass) is remembered, so that the next pass fails the task with the
server's words instead of retrying a create that can never succeed.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Mapping
from typing import Any

from pot import errors, urls
from pot.operator import (
    builders_trainers,
    gang,
    kubeapi,
    metrics,
    names,
    phases,
    posting,
    runtime,
    validators_client,
    vsets,
)
from pot.operator.config import Config
from pot.operator.runtime import TASK, Runtime

log = logging.getLogger("pot.operator")

PROGRESS_PHASES = (phases.TRAINING, phases.VERIFYING, phases.SETTLING)


def validator_bases(rt: Runtime, namespace: str, vset: str) -> list[str]:
    """Base URLs of a ValidatorSet's replicas: ready pods first (or the configured stand-in)."""
    if rt.config.validator_url:
        return [rt.config.validator_url]
    pods = list(rt.vset_pods.get((namespace, vset), {}).values())

    def ready(pod: dict[str, Any]) -> bool:
        conds = (pod.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)

    pods.sort(key=lambda p: (not ready(p), p["metadata"]["name"]))
    out = []
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        if ip and not pod["metadata"].get("deletionTimestamp"):
            out.append(f"http://{ip}:8080")
    return out


async def chain_receipt(
    cfg: Config, vset_body: Mapping[str, Any] | None, task_id: str, progress: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The task's settlement as the contract's own events record it (None until settled).

    The operator does not take a validator's word for a payout (DESIGN §4.6):
    it reads ``Settled``/``Credited`` from the chain named by the ValidatorSet.
    Payees that submitted segments are miners; the others are validators.
    """
    from pot.settlement import receipts

    chain = ((vset_body or {}).get("spec") or {}).get("chain") or {}
    rpc_url = chain.get("rpcUrl") or cfg.chain_rpc_url
    contract = chain.get("contract")
    if not rpc_url or not contract:
        return None
    miners = {str(a).lower() for a in (progress.get("miners") or {})}
    try:
        receipt = await asyncio.to_thread(
            receipts.find, rpc_url, contract, task_id, timeout=cfg.http_timeout
        )
    except errors.ChainError as exc:
        # The URL may come from a Secret and carry an API key: never log it whole.
        log.warning(
            "task %s: settlement receipt not readable: %s", task_id, urls.redact_text(str(exc))
        )
        return None
    if receipt is not None:
        for payout in receipt["payouts"]:
            payout["role"] = "miner" if payout["address"].lower() in miners else "validator"
    return receipt


async def _service_taken(kube: kubeapi.Client, task: Mapping[str, Any]) -> str | None:
    """Create the gang's headless Service; None when it is the task's own.

    Its name is the task's, and a ValidatorSet's client Service is named after the set, so
    a set and a task of one name want the same Service: the trainers would rendezvous
    through the set's. Then the reason (the holder named). "" while the Service still
    belongs to an earlier TrainingTask of this name (deleted; the garbage collector takes
    its Service soon): wait for it, do not fail the new task.
    """
    body = builders_trainers.build_service_spec(task)
    if await kube.create(body, "services") is not None:
        return None
    meta, svc = task["metadata"], body["metadata"]["name"]
    try:
        live = await kube.get("v1", "services", meta["namespace"], svc)
    except kubeapi.NotFound:
        return ""  # gone between the two calls: create it on the next pass
    owners = kubeapi.controllers(live)
    if any(o.get("uid") == meta.get("uid") for o in owners):
        return None
    if any(o.get("kind") == "TrainingTask" and o.get("name") == meta["name"] for o in owners):
        return ""
    holder = f'{owners[0].get("kind")} "{owners[0].get("name")}"' if owners else "no pot object"
    return (
        f'Service "{svc}" exists in namespace "{meta["namespace"]}" and belongs to {holder}, '
        "not to this task: its trainers rendezvous through that name; rename the task (or "
        "that object)"
    )


def deleting(body: Mapping[str, Any]) -> bool:
    return bool(body["metadata"].get("deletionTimestamp"))


async def reconcile(
    rt: Runtime, kube: kubeapi.Client, vclient: validators_client.Client, namespace: str, name: str
) -> None:
    """One level-triggered pass over the task ``namespace/name``."""
    key = (namespace, name)
    task = rt.tasks.get(key)
    if task is None or task["metadata"].get("deletionTimestamp"):
        return
    cfg = rt.config
    spec = task.get("spec") or {}
    status = task.get("status") or {}
    now = datetime.datetime.now(datetime.UTC)
    views = [
        v
        for v in (phases.pod_view(p, rt.nodes) for p in rt.expected_pods(key).values())
        if v is not None
    ]
    vset_name = (spec.get("validatorSetRef") or {}).get("name", "")
    vset_body = rt.vsets.get((namespace, vset_name))
    secret = (spec.get("minerKeysSecretRef") or {}).get("name", "")
    selector: dict[str, str] = {}
    tolerations: list[Any] = []
    queued = False
    try:
        template = builders_trainers.build_pod_spec(task, 0, 0, cfg)["spec"]
        selector = template.get("nodeSelector") or {}
        tolerations = template.get("tolerations") or []
        queued = builders_trainers.queue_of(task) is not None
    except (KeyError, TypeError, ValueError):
        pass  # a malformed spec: decide() names the field and fails the task
    task_id = f"{namespace}/{name}"
    bases = validator_bases(rt, namespace, vset_name)
    progress: Mapping[str, Any] | None = None
    if status.get("phase") in PROGRESS_PHASES:
        # Read at most once per progress_interval per task (a reconcile woken by
        # a pod event reuses the last answer): validators serve many tasks.
        at, progress = rt.progress.get(key, (0.0, None))
        if time.monotonic() - at >= cfg.progress_interval:
            try:
                progress = await vclient.task(bases, task_id)
            except errors.ProtocolError as exc:
                log.info("task %s: progress not available: %s", task_id, exc)
            rt.progress[key] = (time.monotonic(), dict(progress) if progress else None)
    if progress and progress.get("allocation") and not progress.get("settlement"):
        receipt = await chain_receipt(cfg, vset_body, task_id, progress)
        if receipt is not None:
            progress = {**progress, "settlement": receipt}
    rejected_uid, rejected = rt.rejections.get(key, ("", ""))
    world = phases.World(
        task=task,
        now=now,
        # A set being deleted is gone for its tasks: its replicas are going with it.
        vset=None if vset_body is None or deleting(vset_body) else vsets.view_of(vset_body),
        miner_keys=rt.secret_keys.get((namespace, secret)),
        nodes=list(rt.nodes.values()),
        used=rt.node_used,
        selector=selector,
        tolerations=tolerations,
        queued=queued,
        pods=views,
        progress=progress,
        pending=rt.pending(key),
        create_rejected=rejected if rejected_uid == task["metadata"].get("uid") else "",
        grace=cfg.ref_grace,
        gang_timeout=cfg.gang_timeout,
        poll=cfg.poll_interval,
    )
    plan = phases.decide(world)
    if plan.register:
        by_rank = rt.miner_addresses.get((namespace, secret), {})
        nodes = (spec.get("resources") or {}).get("nodes")
        nodes = nodes if isinstance(nodes, int) else 0
        # Every rank's miner, or none bound (a rank's bad key fails its trainer anyway).
        miners = (
            [by_rank[r] for r in range(nodes)] if all(r in by_rank for r in range(nodes)) else []
        )
        if cfg.stake_check and vset_body is not None:
            # Before the validators hear of the task: a miner without stake is not bound.
            bound = {r: a for r, a in by_rank.items() if r < nodes}
            world.stakes = await rt.stakes.check(kube, task, vset_body, bound)
            live = rt.tasks.get(key)
            if live is None or live["metadata"].get("uid") != task["metadata"].get("uid"):
                # Deleted while the chain was asked: its forget() has run, so drop the
                # backoff the check just kept, or it stays for the operator's life.
                rt.stakes.forget(key)
        if world.stakes is None or world.stakes.problem is None:
            try:
                uid = str(task["metadata"].get("uid") or "")
                await vclient.register(bases, task_id, spec, miners, uid=uid)
                world.registration = phases.Registration("ok")
            except validators_client.Rejected as exc:
                world.registration = phases.Registration("rejected", str(exc))
            except validators_client.Unavailable as exc:
                world.registration = phases.Registration("unavailable", str(exc))
        world.pending = rt.pending(key)  # other gangs may have been released meanwhile
        plan = phases.decide(world)
    if plan.requeue is not None and plan.status.get("phase") in PROGRESS_PHASES:
        plan.requeue = max(plan.requeue, min(cfg.progress_interval, cfg.poll_interval * 3))
    await apply(rt, kube, task, plan, now)


def refusal(task: Mapping[str, Any], exc: kubeapi.ApiError) -> str | None:
    """The API server's words when it refused a trainer pod for its spec, or None
    when the refusal may pass (RBAC, quota, a namespace being deleted: retried).

    422 is the pod's validation (a toleration with ``operator: Exists`` and a
    value, an unknown taint effect). 403/404 count only when they name the
    spec's PriorityClass (the Priority admission plugin: "no PriorityClass with
    name ... was found").
    """
    text = str(exc)
    # "422 Invalid: POST /api/v1/...: Pod "x" is invalid: ..." -> the server's message.
    parts = text.split(": ", 2)
    message = parts[2] if len(parts) == 3 else text
    if exc.code == 422:
        return message
    res = (task.get("spec") or {}).get("resources") or {}
    pclass = str(res.get("priorityClassName") or "")
    if exc.code in (403, 404) and pclass and pclass in message and "priorityclass" in text.lower():
        return f"spec.resources.priorityClassName: {message}"
    return None


async def apply(
    rt: Runtime,
    kube: kubeapi.Client,
    task: dict[str, Any],
    plan: phases.Plan,
    now: datetime.datetime,
) -> None:
    """Carry out a plan (see the module docstring for the order and why)."""
    meta = task["metadata"]
    key = (meta["namespace"], meta["name"])
    if not rt.active:
        return
    # Synchronously, before the first await: from here on other counts see the room.
    claimed: list[str] = []
    if builders_trainers.queue_of(task) is None:
        if plan.create_released:
            claimed += [names.trainer_pod(meta["name"], r) for r in plan.create_ranks]
        claimed += plan.release
    if claimed:
        template = builders_trainers.build_pod_spec(task, 0, plan.attempt, rt.config, gated=False)
        rt.reserve(key, claimed, gang.claim_of(template))
    unsent = set(claimed)
    try:
        await _apply(rt, kube, task, plan, now, unsent=unsent)
    finally:
        rt.unreserve(key, sorted(unsent))  # the writes that never happened hold nothing


async def _apply(
    rt: Runtime,
    kube: kubeapi.Client,
    task: dict[str, Any],
    plan: phases.Plan,
    now: datetime.datetime,
    *,
    unsent: set[str],
) -> None:
    meta = task["metadata"]
    ns, name = meta["namespace"], meta["name"]
    key = (ns, name)
    if plan.status_changed:
        fresh = await posting.write_status(kube, names.TASKS, task, plan.status)
        if fresh is None:  # stale view: redo from the newer object the watch brings
            rt.queue.add((TASK, ns, name), 0.2)
            return
        rt.tasks[key] = fresh
    for ev in plan.events:
        await posting.post_event(
            kube, task, ev.type, ev.reason, ev.message, now=now, instance=rt.config.identity
        )
        if ev.reason == "GangRestarting":
            metrics.GANG_RESTARTS.inc()
    for pod in plan.delete:
        await kube.delete("v1", "pods", ns, pod.name, uid=pod.uid)
        rt.expect_deleted(key, pod.uid)
    for pod in plan.force_delete:
        await kube.delete("v1", "pods", ns, pod.name, uid=pod.uid, grace=0)
        rt.expect_deleted(key, pod.uid)
    if plan.ensure_children:
        taken = await _service_taken(kube, task)
        if taken is not None:
            if taken:  # never again: the next pass fails the task, naming the holder
                log.warning("task %s/%s: %s", ns, name, taken)
                rt.rejections[key] = (meta.get("uid", ""), taken)
            rt.queue.add((TASK, ns, name), 0 if taken else 2.0)
            return
        if rt.config.store_volume == "pvc":
            for rank in plan.create_ranks:
                await kube.create(
                    builders_trainers.build_store_claim_spec(task, rank, rt.config),
                    "persistentvolumeclaims",
                )
        queue = builders_trainers.queue_of(task)
        if queue is not None and queue[0] == "volcano":
            try:
                await kube.create(
                    builders_trainers.build_volcano_podgroup(task, plan.attempt), "podgroups"
                )
            except kubeapi.NotFound:
                raise errors.ClusterError(
                    f"task {ns}/{name} is queued on Volcano ({names.VOLCANO_QUEUE}) but the "
                    f"API server serves no podgroups.{names.VOLCANO_API_VERSION}: install "
                    "Volcano or drop the queue annotation"
                ) from None
            if plan.attempt > 0:  # the previous attempt's group would hold queue quota
                await kube.delete(
                    names.VOLCANO_API_VERSION,
                    "podgroups",
                    ns,
                    names.volcano_podgroup(name, plan.attempt - 1),
                )
    for rank in plan.create_ranks:
        body = builders_trainers.build_pod_spec(
            task, rank, plan.attempt, rt.config, gated=not plan.create_released
        )
        try:
            created = await kube.create(body, "pods")
        except kubeapi.ApiError as exc:
            why = refusal(task, exc)
            if why is None:
                raise
            # Never again: the next pass fails the task, naming the field.
            log.warning("task %s/%s: the API server refused its pod: %s", ns, name, why)
            rt.rejections[key] = (
                meta.get("uid", ""),
                f"the API server refused trainer pod {body['metadata']['name']}: {why}",
            )
            rt.queue.add((TASK, ns, name), 0)
            return
        if created is not None:
            rt.expect_created(key, created)
            unsent.discard(body["metadata"]["name"])
    if plan.create_released and plan.create_ranks:
        metrics.GANG_RELEASES.inc()
    if plan.release:
        for pod_name in plan.release:
            try:
                fresh_pod = await kube.patch(
                    "v1", "pods", ns, pod_name, builders_trainers.build_release_patch()
                )
            except kubeapi.NotFound:
                continue
            unsent.discard(pod_name)
            Runtime.put_pod(rt.task_pods.setdefault(key, {}), runtime.slim_pod(fresh_pod))
        metrics.GANG_RELEASES.inc()
    if plan.requeue is not None:
        rt.queue.add((TASK, ns, name), plan.requeue)
