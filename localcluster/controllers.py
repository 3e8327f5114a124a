"""Pure reconcilers for ReplicaSet, Deployment and Job: ``desired(state) -> actions``.

Each function gets the owner object and what the caches hold (its pods, its
ReplicaSets) and returns the writes that move the cluster toward the spec,
plus the owner's new ``status``. The controller manager (``controlling.py``)
applies them over the API; keeping the decisions pure lets the tests check
every rule (scale up/down order, rollout steps, backoff limits) without a
server. Semantics follow kube-controller-manager where the project relies on
them; simplifications are named where they are made.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Obj = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Create:
    """Create ``body`` in ``resource`` (plural, with its apiVersion) of ``namespace``."""

    api_version: str
    resource: str
    namespace: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete one object (uid-preconditioned, so a replacement is never hit)."""

    api_version: str
    resource: str
    namespace: str
    name: str
    uid: str | None = None


@dataclass(frozen=True, slots=True)
class Patch:
    """Merge-patch one object (``subresource`` "status" for status writes)."""

    api_version: str
    resource: str
    namespace: str
    name: str
    patch: dict[str, Any]
    subresource: str = ""


@dataclass(frozen=True, slots=True)
class Event:
    """A core/v1 Event about ``involved``."""

    involved: Mapping[str, Any]
    reason: str
    message: str
    type: str = "Normal"


Action = Create | Delete | Patch | Event


@dataclass(slots=True)
class Plan:
    """What one reconcile wants done."""

    actions: list[Action] = field(default_factory=list)
    status: dict[str, Any] | None = None


def meta(obj: Obj) -> Mapping[str, Any]:
    """``metadata`` or an empty mapping."""
    return obj.get("metadata") or {}


def owner_ref(owner: Obj) -> dict[str, Any]:
    """A controller ownerReference to ``owner``."""
    return {
        "apiVersion": owner.get("apiVersion"),
        "kind": owner.get("kind"),
        "name": meta(owner).get("name"),
        "uid": meta(owner).get("uid"),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned_by(objs: Iterable[Obj], owner: Obj) -> list[Obj]:
    """Objects whose controller ownerReference points at ``owner``'s uid."""
    uid = meta(owner).get("uid")
    return [
        o
        for o in objs
        if any(
            r.get("uid") == uid and r.get("controller")
            for r in meta(o).get("ownerReferences") or []
        )
    ]


def template_hash(template: Obj) -> str:
    """A stable short hash of a pod template (pod-template-hash, revision names)."""
    text = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def suffix() -> str:
    """Five random characters, as generateName uses (vowels left out like Kubernetes)."""
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return "".join(secrets.choice(alphabet) for _ in range(5))


def is_terminal(pod: Obj) -> bool:
    """Succeeded or Failed."""
    return (pod.get("status") or {}).get("phase") in {"Succeeded", "Failed"}


def is_deleting(obj: Obj) -> bool:
    """Has a deletionTimestamp."""
    return bool(meta(obj).get("deletionTimestamp"))


def is_ready(pod: Obj) -> bool:
    """The pod's Ready condition is True."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def is_active(pod: Obj) -> bool:
    """Counts toward replicas: neither terminal nor being deleted."""
    return not is_terminal(pod) and not is_deleting(pod)


def new_pod(
    owner: Obj, template: Obj, *, name: str | None = None, labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A pod body from ``template``, owned by ``owner`` (named, or generateName)."""
    tmeta = dict(template.get("metadata") or {})
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "labels": {**(tmeta.get("labels") or {}), **(labels or {})},
            "annotations": dict(tmeta.get("annotations") or {}),
            "ownerReferences": [owner_ref(owner)],
        },
        "spec": json.loads(json.dumps(template.get("spec") or {})),
    }
    if name:
        body["metadata"]["name"] = name
    else:
        body["metadata"]["generateName"] = f"{meta(owner).get('name')}-"
        # Name it here rather than by generateName so the manager can remember
        # the pod under its final key before the server answers.
        body["metadata"]["name"] = f"{meta(owner).get('name')}-{suffix()}"
    return body


def _deletion_order(pod: Obj) -> tuple[int, int, str]:
    """Which surplus pods go first: unscheduled, then not ready, then newest."""
    scheduled = 1 if (pod.get("spec") or {}).get("nodeName") else 0
    ready = 1 if is_ready(pod) else 0
    created = str(meta(pod).get("creationTimestamp") or "")
    return (scheduled, ready, "".join(chr(0x10FFFF - ord(c)) for c in created))


def replicaset(rs: Obj, pods: Sequence[Obj]) -> Plan:
    """Keep ``spec.replicas`` active pods from the template."""
    ns = str(meta(rs).get("namespace"))
    want = int((rs.get("spec") or {}).get("replicas", 1))
    mine = owned_by(pods, rs)
    active = [p for p in mine if is_active(p)]
    plan = Plan()
    if len(active) < want and not is_deleting(rs):
        for _ in range(want - len(active)):
            plan.actions.append(Create("v1", "pods", ns, new_pod(rs, rs["spec"]["template"])))
    elif len(active) > want:
        for pod in sorted(active, key=_deletion_order)[: len(active) - want]:
            plan.actions.append(Delete("v1", "pods", ns, meta(pod)["name"], meta(pod).get("uid")))
    ready = sum(1 for p in active if is_ready(p))
    plan.status = {
        "replicas": len(active),
        "fullyLabeledReplicas": len(active),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "observedGeneration": meta(rs).get("generation", 1),
    }
    return plan


def _revision(obj: Obj) -> int:
    try:
        return int((meta(obj).get("annotations") or {}).get("deployment.kubernetes.io/revision", 0))
    except ValueError:
        return 0


def deployment(dep: Obj, replicasets: Sequence[Obj], pods: Sequence[Obj]) -> Plan:
    """Roll the Deployment's ReplicaSets toward the current template.

    RollingUpdate is simplified to "surge the new ReplicaSet to full size, then
    shrink old ones as new pods become ready" (RollingUpdate with maxSurge
    100%); Recreate scales old ReplicaSets to 0 first.
    """
    ns = str(meta(dep).get("namespace"))
    name = str(meta(dep).get("name"))
    spec = dep.get("spec") or {}
    want = int(spec.get("replicas", 1))
    template = spec.get("template") or {}
    phash = template_hash(template)
    mine = owned_by(replicasets, dep)
    new = next(
        (r for r in mine if (meta(r).get("labels") or {}).get("pod-template-hash") == phash), None
    )
    old = [r for r in mine if r is not new]
    plan = Plan()
    revision = max((_revision(r) for r in mine), default=0)
    recreate = (spec.get("strategy") or {}).get("type") == "Recreate"
    old_active = sum(len([p for p in owned_by(pods, r) if is_active(p)]) for r in old)
    if new is None:
        labels = {
            **((template.get("metadata") or {}).get("labels") or {}),
            "pod-template-hash": phash,
        }
        tmpl = json.loads(json.dumps(template))
        tmpl.setdefault("metadata", {})["labels"] = labels
        selector = json.loads(json.dumps(spec.get("selector") or {}))
        selector.setdefault("matchLabels", {})["pod-template-hash"] = phash
        body = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{name}-{phash}",
                "labels": labels,
                "annotations": {"deployment.kubernetes.io/revision": str(revision + 1)},
                "ownerReferences": [owner_ref(dep)],
            },
            "spec": {
                "replicas": 0 if recreate and old_active else want,
                "selector": selector,
                "template": tmpl,
            },
        }
        plan.actions.append(Create("apps/v1", "replicasets", ns, body))
        new_ready = 0
    else:
        new_pods = [p for p in owned_by(pods, new) if is_active(p)]
        new_ready = sum(1 for p in new_pods if is_ready(p))
        target = 0 if recreate and old_active else want
        if int((new.get("spec") or {}).get("replicas", 0)) != target:
            plan.actions.append(
                Patch(
                    "apps/v1", "replicasets", ns, meta(new)["name"], {"spec": {"replicas": target}}
                )
            )
    keep_old = 0 if recreate else max(0, want - new_ready)
    for rs in sorted(old, key=_revision, reverse=True):
        current = int((rs.get("spec") or {}).get("replicas", 0))
        target = min(current, keep_old)
        keep_old -= target
        if current != target:
            plan.actions.append(
                Patch(
                    "apps/v1", "replicasets", ns, meta(rs)["name"], {"spec": {"replicas": target}}
                )
            )
    all_active = [p for r in mine for p in owned_by(pods, r) if is_active(p)]
    ready = sum(1 for p in all_active if is_ready(p))
    available = ready >= want
    plan.status = {
        "observedGeneration": meta(dep).get("generation", 1),
        "replicas": len(all_active),
        "updatedReplicas": len(
            [
                p
                for p in all_active
                if (meta(p).get("labels") or {}).get("pod-template-hash") == phash
            ]
        ),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "unavailableReplicas": max(0, want - ready),
        "conditions": [
            {
                "type": "Available",
                "status": "True" if available else "False",
                "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                "message": "Deployment has minimum availability."
                if available
                else "Deployment does not have minimum availability.",
            },
            {
                "type": "Progressing",
                "status": "True",
                "reason": "NewReplicaSetAvailable" if new_ready >= want else "ReplicaSetUpdated",
                "message": f'ReplicaSet "{name}-{phash}" is progressing.',
            },
        ],
    }
    return plan


def job(job_obj: Obj, pods: Sequence[Obj], *, now: str) -> Plan:
    """Run pods until ``completions`` succeed or ``backoffLimit`` failures.

    NonIndexed and Indexed completion modes; pod failure policy and
    successPolicy are not implemented.
    """
    ns = str(meta(job_obj).get("namespace"))
    spec = job_obj.get("spec") or {}
    status = dict(job_obj.get("status") or {})
    completions = spec.get("completions")
    parallelism = int(spec.get("parallelism", 1))
    indexed = spec.get("completionMode") == "Indexed"
    want = int(completions) if completions is not None else 1
    backoff_limit = int(spec.get("backoffLimit", 6))
    mine = owned_by(pods, job_obj)
    succeeded = [p for p in mine if (p.get("status") or {}).get("phase") == "Succeeded"]
    failed = [p for p in mine if (p.get("status") or {}).get("phase") == "Failed"]
    active = [p for p in mine if is_active(p)]
    plan = Plan()
    conditions = list(status.get("conditions") or [])
    finished = any(
        c.get("type") in {"Complete", "Failed"} and c.get("status") == "True" for c in conditions
    )
    done_indexes = {
        (meta(p).get("annotations") or {}).get("batch.kubernetes.io/job-completion-index")
        for p in succeeded
    }
    if not finished:
        if len(failed) > backoff_limit:
            for cond_type in ("FailureTarget", "Failed"):
                conditions.append(
                    {
                        "type": cond_type,
                        "status": "True",
                        "reason": "BackoffLimitExceeded",
                        "message": "Job has reached the specified backoff limit",
                        "lastProbeTime": now,
                        "lastTransitionTime": now,
                    }
                )
            plan.actions.append(
                Event(
                    job_obj,
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                    "Warning",
                )
            )
            finished = True
        elif (len(done_indexes) if indexed else len(succeeded)) >= want:
            for cond_type in ("SuccessCriteriaMet", "Complete"):
                conditions.append(
                    {
                        "type": cond_type,
                        "status": "True",
                        "reason": "CompletionsReached",
                        "message": "Reached expected number of succeeded pods",
                        "lastProbeTime": now,
                        "lastTransitionTime": now,
                    }
                )
            status["completionTime"] = now
            plan.actions.append(Event(job_obj, "Completed", "Job completed"))
            finished = True
    if finished:
        for pod in active:
            plan.actions.append(Delete("v1", "pods", ns, meta(pod)["name"], meta(pod).get("uid")))
    elif not spec.get("suspend"):
        uid = str(meta(job_obj).get("uid"))
        labels = {
            "batch.kubernetes.io/controller-uid": uid,
            "controller-uid": uid,
            "batch.kubernetes.io/job-name": str(meta(job_obj).get("name")),
            "job-name": str(meta(job_obj).get("name")),
        }
        if indexed:
            running = {
                (meta(p).get("annotations") or {}).get("batch.kubernetes.io/job-completion-index")
                for p in active
            }
            todo = [i for i in range(want) if str(i) not in done_indexes | running]
            for index in todo[: max(0, parallelism - len(active))]:
                body = new_pod(
                    job_obj,
                    spec["template"],
                    labels={**labels, "batch.kubernetes.io/job-completion-index": str(index)},
                )
                body["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] = str(
                    index
                )
                for c in body["spec"].get("containers") or []:
                    c.setdefault("env", []).append(
                        {"name": "JOB_COMPLETION_INDEX", "value": str(index)}
                    )
                plan.actions.append(Create("v1", "pods", ns, body))
        else:
            remaining = want - len(succeeded) - len(active)
            for _ in range(max(0, min(parallelism - len(active), remaining))):
                plan.actions.append(
                    Create("v1", "pods", ns, new_pod(job_obj, spec["template"], labels=labels))
                )
    status.update(
        {
            "active": 0 if finished else len(active),
            "succeeded": len(succeeded),
            "failed": len(failed),
            "ready": sum(1 for p in active if is_ready(p)),
            "conditions": conditions,
            "startTime": status.get("startTime") or now,
        }
    )
    if indexed:
        status["completedIndexes"] = ",".join(
            sorted((i for i in done_indexes if i is not None), key=int)
        )
    plan.status = status
    return plan
