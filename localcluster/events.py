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


#: A repeat of the same event (object, reason, message) within this many
#: seconds bumps the first one's ``count`` instead of creating another, as
#: the kubelet's event correlator does ("x17 over 2m"): a probe failing every
#: second must not grow the API server's log without bound.
AGGREGATE_WINDOW = 600.0
#: At most one count update per aggregated event per this many seconds.
UPDATE_EVERY = 10.0


class Recorder:
    """Sends events in the background, bounded so a flood cannot grow memory."""

    def __init__(self, api: apiclient.Api, component: str) -> None:
        self.api = api
        self.component = component
        self.pending: set[asyncio.Task[None]] = set()
        # key -> [event body, first seen, last written, count, count written]
        self.seen: dict[tuple[str, str, str], list[Any]] = {}

    def emit(
        self,
        involved: Mapping[str, Any],
        reason: str,
        message: str,
        kind: str = "Normal",
        host: str = "",
    ) -> None:
        """Queue one event (or count a repeat of a recent one)."""
        if len(self.pending) > 500:
            return
        meta = involved.get("metadata") or {}
        key = (str(meta.get("uid") or meta.get("name")), reason, message)
        now = time.monotonic()
        entry = self.seen.get(key)
        if entry is not None and now - entry[1] < AGGREGATE_WINDOW:
            entry[3] += 1
            if now - entry[2] < UPDATE_EVERY:
                return
            entry[2] = now
            self._spawn(self._bump(entry))
            return
        if len(self.seen) > 10_000:
            self.seen = {k: v for k, v in self.seen.items() if now - v[1] < AGGREGATE_WINDOW}
        ev = body(involved, reason, message, kind, component=self.component, host=host)
        self.seen[key] = [ev, now, now, 1, 1]
        self._spawn(self._send(ev))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _send(self, ev: dict[str, Any]) -> None:
        ns = ev["metadata"]["namespace"]
        try:
            await self.api.create(apiclient.path_for("v1", "events", ns), ev)
        except errors.ClusterError as exc:
            log.debug("event %s not written: %s", ev["reason"], exc)

    async def _bump(self, entry: list[Any]) -> None:
        ev, count = entry[0], entry[3]
        if count == entry[4]:
            return
        entry[4] = count
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        path = apiclient.path_for(
            "v1", "events", ev["metadata"]["namespace"], ev["metadata"]["name"]
        )
        try:
            await self.api.patch(path, {"count": count, "lastTimestamp": stamp})
        except errors.ClusterError as exc:
            log.debug("event %s not updated: %s", ev["reason"], exc)
