"""Pure StatefulSet reconciler: stable names, ordered start, scale, rolling update.

The validator set is a StatefulSet whose replicas find each other as
``<sts>-<i>.<service>.<ns>.svc.cluster.local`` and keep their data across
restarts, so this follows kube-controller-manager closely: pods are
``<sts>-<ordinal>`` with ``hostname``/``subdomain`` set; OrderedReady creates
ordinal i only when 0..i-1 are Running and Ready and removes the highest
ordinal first; Parallel does both at once; a deleted or failed pod is
recreated under the same name; RollingUpdate replaces pods from the highest
ordinal down, one at a time, each once the others are Ready (``partition``
honoured); volumeClaimTemplates give each ordinal its own PVC
``<template>-<sts>-<i>``, kept when the pod goes.

Revisions are a hash of the pod template (no ControllerRevision objects).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pot.localcluster.controllers import (
    Create,
    Delete,
    Event,
    Obj,
    Plan,
    is_deleting,
    is_ready,
    is_terminal,
    meta,
    new_pod,
    owned_by,
    owner_ref,
    template_hash,
)

REVISION_LABEL = "controller-revision-hash"


def _ordinal(sts_name: str, pod: Obj) -> int | None:
    name = str(meta(pod).get("name", ""))
    head, _, tail = name.rpartition("-")
    if head != sts_name or not tail.isdigit():
        return None
    return int(tail)


def _is_running_ready(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and is_ready(pod)


def pod_for(sts: Obj, ordinal: int, revision: str) -> dict[str, Any]:
    """The pod body for ``ordinal`` at ``revision``."""
    name = str(meta(sts).get("name"))
    spec = sts.get("spec") or {}
    pod_name = f"{name}-{ordinal}"
    body = new_pod(
        sts,
        spec.get("template") or {},
        name=pod_name,
        labels={
            REVISION_LABEL: f"{name}-{revision}",
            "statefulset.kubernetes.io/pod-name": pod_name,
            "apps.kubernetes.io/pod-index": str(ordinal),
        },
    )
    pspec = body["spec"]
    pspec["hostname"] = pod_name
    if spec.get("serviceName"):
        pspec["subdomain"] = spec["serviceName"]
    volumes = pspec.setdefault("volumes", [])
    present = {v.get("name") for v in volumes}
    for claim in spec.get("volumeClaimTemplates") or []:
        cname = (claim.get("metadata") or {}).get("name")
        if cname not in present:
            volumes.append(
                {"name": cname, "persistentVolumeClaim": {"claimName": f"{cname}-{pod_name}"}}
            )
    return body


def _claims(sts: Obj, ordinal: int, existing: Mapping[str, Obj]) -> list[Create]:
    ns = str(meta(sts).get("namespace"))
    name = str(meta(sts).get("name"))
    out = []
    for claim in (sts.get("spec") or {}).get("volumeClaimTemplates") or []:
        cmeta = claim.get("metadata") or {}
        pvc_name = f"{cmeta.get('name')}-{name}-{ordinal}"
        if pvc_name in existing:
            continue
        body = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": pvc_name,
                "labels": {**(cmeta.get("labels") or {}), **_selector_labels(sts)},
            },
            "spec": json.loads(json.dumps(claim.get("spec") or {})),
        }
        policy = (sts.get("spec") or {}).get("persistentVolumeClaimRetentionPolicy") or {}
        if policy.get("whenDeleted") == "Delete":
            body["metadata"]["ownerReferences"] = [owner_ref(sts) | {"controller": False}]
        out.append(Create("v1", "persistentvolumeclaims", ns, body))
    return out


def _selector_labels(sts: Obj) -> dict[str, str]:
    return dict(((sts.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})


def statefulset(sts: Obj, pods: Sequence[Obj], pvcs: Mapping[str, Obj]) -> Plan:
    """Move ``sts``'s pods one safe step toward the spec; ``pvcs`` by name."""
    ns = str(meta(sts).get("namespace"))
    name = str(meta(sts).get("name"))
    spec = sts.get("spec") or {}
    want = int(spec.get("replicas", 1))
    parallel = spec.get("podManagementPolicy") == "Parallel"
    strategy = spec.get("updateStrategy") or {}
    rolling = strategy.get("type", "RollingUpdate") == "RollingUpdate"
    partition = int((strategy.get("rollingUpdate") or {}).get("partition", 0))
    revision = template_hash(spec.get("template") or {})
    update_rev = f"{name}-{revision}"
    by_ordinal: dict[int, Obj] = {}
    for pod in owned_by(pods, sts):
        ordinal = _ordinal(name, pod)
        if ordinal is not None:
            by_ordinal[ordinal] = pod
    plan = Plan()
    if is_deleting(sts):
        return plan

    def delete(pod: Obj) -> Delete:
        return Delete("v1", "pods", ns, str(meta(pod)["name"]), meta(pod).get("uid"))

    blocked = False
    for ordinal in range(want):
        member = by_ordinal.get(ordinal)
        if member is None:
            if blocked:
                break
            plan.actions.extend(_claims(sts, ordinal, pvcs))
            body = pod_for(sts, ordinal, revision)
            plan.actions.append(Create("v1", "pods", ns, body))
            plan.actions.append(
                Event(
                    sts,
                    "SuccessfulCreate",
                    f"create Pod {body['metadata']['name']} in StatefulSet {name} successful",
                )
            )
            if not parallel:
                blocked = True
            continue
        if is_terminal(member) and not is_deleting(member):
            # A failed (or completed) member is replaced under the same name.
            plan.actions.append(delete(member))
            blocked = blocked or not parallel
            continue
        if not parallel and not _is_running_ready(member):
            blocked = True
    # Scale down: highest ordinal first; OrderedReady one at a time once the rest are ready.
    surplus = sorted((o for o in by_ordinal if o >= want), reverse=True)
    for ordinal in surplus:
        pod = by_ordinal[ordinal]
        if is_deleting(pod):
            if not parallel:
                break
            continue
        if not parallel and any(
            not _is_running_ready(by_ordinal[o]) for o in by_ordinal if o < ordinal and o < want
        ):
            break
        plan.actions.append(delete(pod))
        plan.actions.append(
            Event(
                sts,
                "SuccessfulDelete",
                f"delete Pod {meta(pod)['name']} in StatefulSet {name} successful",
            )
        )
        if not parallel:
            break
    # Rolling update: replace the highest outdated ordinal once every other member is ready.
    if rolling and not any(a for a in plan.actions if isinstance(a, Create | Delete)):
        members = [by_ordinal[o] for o in range(want) if o in by_ordinal]
        all_ready = len(members) == want and all(_is_running_ready(p) for p in members)
        outdated = [
            o
            for o in range(want)
            if o in by_ordinal
            and o >= partition
            and (meta(by_ordinal[o]).get("labels") or {}).get(REVISION_LABEL) != update_rev
        ]
        if outdated and all_ready and not any(is_deleting(p) for p in members):
            plan.actions.append(delete(by_ordinal[max(outdated)]))
    active = [p for o, p in by_ordinal.items() if not is_deleting(p) and not is_terminal(p)]
    updated = [p for p in active if (meta(p).get("labels") or {}).get(REVISION_LABEL) == update_rev]
    ready = sum(1 for p in active if is_ready(p))
    current_rev = (sts.get("status") or {}).get("currentRevision") or update_rev
    if len(updated) == want and all(is_ready(p) for p in updated):
        current_rev = update_rev
    plan.status = {
        "observedGeneration": meta(sts).get("generation", 1),
        "replicas": len(active),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "currentReplicas": len(updated)
        if current_rev == update_rev
        else len(active) - len(updated),
        "updatedReplicas": len(updated),
        "currentRevision": current_rev,
        "updateRevision": update_rev,
        "collisionCount": 0,
    }
    return plan
