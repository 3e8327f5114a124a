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
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging

from pot.localcluster import handling, statuses
from pot.localcluster.storage import Key, Obj

log = logging.getLogger(__name__)


class Collector:
    """Sweeps the store for garbage after writes (coalesced: one sweep per wake-up)."""

    def __init__(self, cluster: handling.Cluster) -> None:
        self.cluster = cluster
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._deleted_uids: list[str] = []
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
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(0.01)  # coalesce a burst of writes into one sweep
            self.safe_sweep()
            await self.cluster.store.sync()

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
