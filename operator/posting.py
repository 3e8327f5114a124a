"""Status writes and Kubernetes Events, the two ways the operator talks to users.

Status writes are merge patches of the ``status`` subresource carrying the
resourceVersion the decision was made from: if anything changed meanwhile the
API server answers 409 and the reconcile is simply redone from fresh state,
so a decision taken on a stale view never lands (this is what makes counters
such as ``status.restarts`` safe without a lock). Events are best effort: a
refused Event is logged, never retried into a loop.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pot import errors
from pot.operator import conditions, kubeapi, names

log = logging.getLogger("pot.operator")


async def write_status(
    kube: kubeapi.Client, plural: str, body: Mapping[str, Any], status: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Patch ``status`` guarded by the body's resourceVersion; None on a conflict."""
    meta = body["metadata"]
    patch = {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "status": dict(status)}
    try:
        return await kube.patch(
            names.API_VERSION, plural, meta["namespace"], meta["name"], patch, sub="status"
        )
    except kubeapi.Conflict:
        return None


async def post_event(
    kube: kubeapi.Client,
    involved: Mapping[str, Any],
    type_: str,
    reason: str,
    message: str,
    *,
    now: Any,
    instance: str,
) -> None:
    """Create a core/v1 Event about ``involved`` (best effort)."""
    meta = involved["metadata"]
    stamp = conditions.timestamp(now)
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion", names.API_VERSION),
            "kind": involved.get("kind", ""),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid", ""),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": names.MANAGER},
        "reportingComponent": names.MANAGER,
        "reportingInstance": instance or names.MANAGER,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    try:
        await kube.create(body, "events")
    except errors.ClusterError as exc:
        log.warning(
            "event %s about %s/%s not posted: %s", reason, meta["namespace"], meta["name"], exc
        )
