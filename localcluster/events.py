"""Writing core/v1 Events the way cluster components do.

``kubectl describe`` and ``kubectl get events`` show what the scheduler,
controllers and kubelet did (FailedScheduling, BackOff, Unhealthy, Killing),
and the tests assert on those reasons, so every component reports through
this one helper. Events are fire-and-forget: a failed write is logged, never
raised into the component's loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from pot import errors
from pot.localcluster import apiclient

log = logging.getLogger(__name__)


def body(
    involved: Mapping[str, Any],
    reason: str,
    message: str,
    kind: str,
    *,
    component: str,
    host: str = "",
) -> dict[str, Any]:
    """The Event object (named like the real ones: ``<object>.<hex nanos>``)."""
    meta = involved.get("metadata") or {}
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    source = {"component": component}
    if host:
        source["host"] = host
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta.get('name')}.{time.time_ns():x}",
            "namespace": meta.get("namespace") or "default",
        },
        "involvedObject": {
            "apiVersion": involved.get("apiVersion", "v1"),
            "kind": involved.get("kind", "Pod"),
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "reason": reason,
        "message": message,
        "type": kind,
        "source": source,
        "reportingComponent": component,
        "reportingInstance": host or component,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


class Recorder:
    """Sends events in the background, bounded so a flood cannot grow memory."""

    def __init__(self, api: apiclient.Api, component: str) -> None:
        self.api = api
        self.component = component
        self.pending: set[asyncio.Task[None]] = set()

    def emit(
        self,
        involved: Mapping[str, Any],
        reason: str,
        message: str,
        kind: str = "Normal",
        host: str = "",
    ) -> None:
        """Queue one event."""
        if len(self.pending) > 500:
            return
        ev = body(involved, reason, message, kind, component=self.component, host=host)
        task = asyncio.get_running_loop().create_task(self._send(ev))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _send(self, ev: dict[str, Any]) -> None:
        ns = ev["metadata"]["namespace"]
        try:
            await self.api.create(apiclient.path_for("v1", "events", ns), ev)
        except errors.ClusterError as exc:
            log.debug("event %s not written: %s", ev["reason"], exc)
