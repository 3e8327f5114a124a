"""Garbage collection by ownerReferences, and namespace deletion.

On a real cluster these are controllers in kube-controller-manager (the
garbage collector and the namespace controller) that watch the API. Here they
run inside the API server process, since they need nothing but the store and
every cluster needs them: a sweep runs after each batch of writes.

* Background deletion: once an owner is gone, a dependent whose every owner
  is gone is deleted (background again, so chains cascade).
* Orphan: an owner with the ``orphan`` finalizer has its uid removed from its
  dependents' ownerReferences, then loses the finalizer.
* Foreground: an owner with ``foregroundDeletion`` has its dependents deleted
  and loses the finalizer when none remain.
* A namespace with ``deletionTimestamp`` has every object in it deleted; once
  it is empty its ``kubernetes`` finalizer is dropped and it goes.
* Events expire :data:`EVENT_TTL` seconds after their last write (the real
  server's ``--event-ttl``, 1 h, an etcd lease): kopf and the components post
  events for as long as the cluster runs, and they must not fill the store,
  its memory and its log for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import logging
import time
from typing import Any

from pot.localcluster import handling, statuses
from pot.localcluster.storage import Key, Obj

log = logging.getLogger(__name__)

EVENT_TTL = 3600.0
"""Seconds an Event lives after its last write, as kube-apiserver's default --event-ttl."""
_EVENTS = (("", "events"), ("events.k8s.io", "events"))
_EVENT_TIMES = ("lastTimestamp", "eventTime", "firstTimestamp")


def _epoch(stamp: Any) -> float | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        when = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def event_written(ev: Obj) -> float:
    """When an Event was last written, as far as it tells: the latest of its creation and the
    times it reports (a repeat bumps ``lastTimestamp`` or ``series.lastObservedTime``)."""
    series = ev.get("series") if isinstance(ev.get("series"), dict) else {}
    stamps = [
        (ev.get("metadata") or {}).get("creationTimestamp"),
        *(ev.get(k) for k in _EVENT_TIMES),
        (series or {}).get("lastObservedTime"),
    ]
    times = [t for t in map(_epoch, stamps) if t is not None]
    return max(times) if times else 0.0


class Collector:
    """Sweeps the store for garbage after writes (coalesced: one sweep per wake-up)."""

    def __init__(self, cluster: handling.Cluster) -> None:
        self.cluster = cluster
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._deleted_uids: list[str] = []
        self.event_ttl = EVENT_TTL
        self.expiry_every = 60.0
        """How often expired events are looked for (also without writes to wake the sweep)."""
        self._expired_at = 0.0
        cluster.on_change.append(self._wake.set)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: 3.11's wait_for swallows a cancel that arrives as
            # the wake-up does, and the server's shutdown then waited for the next timeout.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.expiry_every):
                    await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(0.01)  # coalesce a burst of writes into one sweep
            self.safe_sweep()
            if time.monotonic() - self._expired_at >= self.expiry_every:
                self._expired_at = time.monotonic()
                try:
                    self.expire_events(time.time())
                except Exception:
                    log.exception("expiring events failed")
            await self.cluster.store.sync()

    def expire_events(self, now: float) -> int:
        """Delete every Event last written more than ``event_ttl`` seconds before ``now``."""
        store, expired = self.cluster.store, 0
        for group, resource in _EVENTS:
            for ev in store.objects(group, resource):
                if now - event_written(ev) <= self.event_ttl:
                    continue
                meta = ev.get("metadata") or {}
                if store.delete((group, resource, meta.get("namespace", ""), meta.get("name", ""))):
                    expired += 1
        return expired

    def safe_sweep(self) -> None:
        """One sweep that never raises: the collector (and the server's start-up, which sweeps
        once) must outlive any object it fails on; the next write retries."""
        try:
            self.sweep()
        except statuses.ApiError as exc:
            log.warning("garbage collection: %s", exc.message)
        except Exception:
            log.exception("garbage collection failed")

    # -- one sweep -----------------------------------------------------------

    def _type(self, key: Key) -> handling.ResourceType | None:
        return self.cluster.registry.by_storage(key[0], key[1])

    def _owners_alive(self, obj: Obj) -> list[str]:
        alive = []
        for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
            if self.cluster.store.by_uid(ref.get("uid", "")) is not None:
                alive.append(ref.get("uid", ""))
        return alive

    def sweep(self) -> None:
        store = self.cluster.store
        # Dependents whose owners are all gone.
        for uid in store.orphaned_owner_uids():
            for key in store.dependents(uid):
                obj = store.get(key)
                if obj is None or self._owners_alive(obj):
                    continue
                self._delete(key, obj)
        # Owners being deleted with orphan / foreground finalizers, and namespaces.
        for key, obj in list(store.deleting()):
            meta = obj.get("metadata") or {}
            fins = meta.get("finalizers") or []
            uid = meta.get("uid", "")
            if "orphan" in fins:
                for dkey in store.dependents(uid):
                    self._drop_owner(dkey, uid)
                self._drop_finalizer(key, "orphan")
            elif "foregroundDeletion" in fins:
                deps = store.dependents(uid)
                for dkey in deps:
                    dep = store.get(dkey)
                    if dep is not None and not (dep.get("metadata") or {}).get("deletionTimestamp"):
                        self._delete(dkey, dep, policy="Foreground")
                if not store.dependents(uid):
                    self._drop_finalizer(key, "foregroundDeletion")
            if key[:2] == ("", "namespaces"):
                self._namespace(key, obj)

    def _delete(self, key: Key, obj: Obj, policy: str = "Background") -> None:
        t = self._type(key)
        if t is None:
            self.cluster.store.delete(key)
            return
        try:
            self.cluster.delete(t, key[2], key[3], policy=policy)
        except statuses.ApiError:
            pass
        except Exception:  # one bad object must not stop the collection of the others
            log.exception("garbage collection: deleting %s", "/".join(key))

    def _update(self, key: Key, new: Obj) -> None:
        t = self._type(key)
        old = self.cluster.store.get(key)
        if t is None or old is None:
            return
        with contextlib.suppress(statuses.ApiError):
            self.cluster.replace(
                t, key, old, new, opts=handling.WriteOptions(manager="garbage-collector")
            )

    def _drop_owner(self, key: Key, uid: str) -> None:
        obj = self.cluster.store.get(key)
        if obj is None:
            return
        new = copy.deepcopy(obj)
        refs = [r for r in new["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
        if refs:
            new["metadata"]["ownerReferences"] = refs
        else:
            new["metadata"].pop("ownerReferences", None)
        self._update(key, new)

    def _drop_finalizer(self, key: Key, name: str) -> None:
        obj = self.cluster.store.get(key)
        if obj is None:
            return
        new = copy.deepcopy(obj)
        new["metadata"]["finalizers"] = [
            f for f in new["metadata"].get("finalizers") or [] if f != name
        ]
        self._update(key, new)

    def _namespace(self, key: Key, ns: Obj) -> None:
        store = self.cluster.store
        left = store.namespaces_in_use(key[3])
        for okey in left:
            obj = store.get(okey)
            if obj is not None and not (obj.get("metadata") or {}).get("deletionTimestamp"):
                self._delete(okey, obj)
        if store.namespaces_in_use(key[3]):
            return
        new = copy.deepcopy(ns)
        new.setdefault("spec", {})["finalizers"] = []
        t = self._type(key)
        if t is None:
            return
        if (ns.get("spec") or {}).get("finalizers"):
            with contextlib.suppress(statuses.ApiError):
                self.cluster.replace(
                    t,
                    key,
                    ns,
                    new,
                    opts=handling.WriteOptions(manager="namespace-controller"),
                    sub="finalize",
                )
        current = store.get(key)
        if current is not None and not (current.get("metadata") or {}).get("finalizers"):
            self.cluster._remove(key)
