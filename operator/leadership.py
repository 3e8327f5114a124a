"""Leader election over a coordination.k8s.io Lease: two replicas never both act.

Why a Lease and not kopf's peering: kopf peering needs its own
ClusterKopfPeering/KopfPeering CRDs installed and only pauses the other
replicas' handlers, while a Lease is built into every cluster, is what
client-go and controller-runtime use, and the chart's RBAC already grants it.
Semantics follow controller-runtime: a standby blocks until the Lease is free
or expired, then takes it with an update guarded by resourceVersion (two
standbys racing get one 409); the leader renews every third of the lease
duration and, if it cannot renew before the lease would expire, stops acting
at once and exits, so that by the time another replica can take the Lease this
one has stopped writing.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable
from typing import Any

from pot import errors
from pot.operator import conditions, kubeapi

log = logging.getLogger("pot.operator")
API = "coordination.k8s.io/v1"


def _micro(now: datetime.datetime) -> str:
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _expired(lease: dict[str, Any], now: datetime.datetime) -> bool:
    spec = lease.get("spec") or {}
    if not spec.get("holderIdentity"):
        return True
    renewed = conditions.parse_time(spec.get("renewTime"))
    duration = float(spec.get("leaseDurationSeconds") or 15)
    return renewed is None or (now - renewed).total_seconds() > duration


class Elector:
    """Holds (or waits for) one Lease on behalf of ``identity``."""

    def __init__(
        self, kube: kubeapi.Client, *, namespace: str, name: str, identity: str, duration: float
    ) -> None:
        self.kube = kube
        self.namespace, self.name, self.identity, self.duration = (
            namespace,
            name,
            identity,
            duration,
        )
        self.lease: dict[str, Any] | None = None

    def _body(self, now: datetime.datetime, old: dict[str, Any] | None) -> dict[str, Any]:
        spec = dict((old or {}).get("spec") or {})
        if spec.get("holderIdentity") != self.identity:
            spec["acquireTime"] = _micro(now)
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if old else 0)
        spec.update(
            holderIdentity=self.identity,
            leaseDurationSeconds=max(int(self.duration), 1),
            renewTime=_micro(now),
        )
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if old:
            meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        return {"apiVersion": API, "kind": "Lease", "metadata": meta, "spec": spec}

    async def try_acquire(self) -> bool:
        """One attempt; True when this replica now holds the Lease."""
        now = datetime.datetime.now(datetime.UTC)
        try:
            old = await self.kube.get(API, "leases", self.namespace, self.name)
        except kubeapi.NotFound:
            created = await self.kube.create(self._body(now, None), "leases")
            if created is None:
                return False
            self.lease = created
            return True
        if old["spec"].get("holderIdentity") != self.identity and not _expired(old, now):
            return False
        try:
            self.lease = await self.kube.replace(self._body(now, old), "leases")
        except kubeapi.Conflict:
            return False
        return True

    async def acquire(self) -> None:
        """Block until this replica leads."""
        while True:
            try:
                if await self.try_acquire():
                    log.info(
                        "leader election: %s holds lease %s/%s",
                        self.identity,
                        self.namespace,
                        self.name,
                    )
                    return
            except errors.ClusterError as exc:
                log.warning("leader election: %s", exc)
            await asyncio.sleep(max(self.duration / 3, 0.2))

    async def keep(self, on_lost: Callable[[], None]) -> None:
        """Renew until cancelled; call ``on_lost`` (once) when the Lease slips away."""
        loop = asyncio.get_running_loop()
        last_ok = loop.time()
        while True:
            await asyncio.sleep(max(self.duration / 3, 0.2))
            try:
                current = await self.kube.get(API, "leases", self.namespace, self.name)
                if current["spec"].get("holderIdentity") != self.identity:
                    raise kubeapi.Conflict(
                        409, "Taken", f"lease held by {current['spec'].get('holderIdentity')}"
                    )
                self.lease = await self.kube.replace(
                    self._body(datetime.datetime.now(datetime.UTC), current), "leases"
                )
                last_ok = loop.time()
            except kubeapi.Conflict as exc:
                log.error("leader election: lost the lease (%s)", exc)
                on_lost()
                return
            except errors.ClusterError as exc:
                # Stop before the lease can expire for others (a margin of one renew period).
                if loop.time() - last_ok > self.duration * 2 / 3:
                    log.error("leader election: cannot renew (%s); stepping down", exc)
                    on_lost()
                    return

    async def release(self) -> None:
        """Give the Lease up on a clean shutdown so a standby takes over at once."""
        try:
            current = await self.kube.get(API, "leases", self.namespace, self.name)
            if current["spec"].get("holderIdentity") != self.identity:
                return
            current["spec"]["holderIdentity"] = ""
            await self.kube.replace(current, "leases")
        except errors.ClusterError as exc:
            log.warning("leader election: lease not released: %s", exc)
