"""The object store: objects, the global resourceVersion, durability and watch history.

What etcd is to a real API server, at the scale of one machine:

* one global, monotonically increasing revision; every write gets the next
  one and it becomes the object's ``metadata.resourceVersion`` (clients must
  treat it as opaque, but kopf, client-go and kubectl all compare it for
  equality, and watches resume from it);
* an append-only JSON-lines log in the state directory, ``fsync``-ed before a
  write is acknowledged, so a ``kill -9`` loses nothing that was answered.
  Commits are grouped: a write appends its record at once, and the request
  awaits :meth:`Store.sync`, which fsyncs (in a thread) every record written
  so far; writes that arrive meanwhile share the next fsync. Watch events are
  published only once their record is on disk, so no watcher ever sees a
  change a crash could undo (a concurrent GET may, for the few milliseconds
  before the fsync; etcd would not, and nothing here depends on it). On open,
  the log is replayed (a torn last line from a crash is dropped) and
  compacted into one record per live object, written to a temporary file,
  fsync-ed and renamed over the old log atomically;
* a bounded history of change events, so a watch can resume from any
  resourceVersion still in it; older ones get 410 Gone, exactly the contract
  client-go's reflector and kopf rely on to relist. It holds at most
  ``history`` events, and beyond the last ``keep`` only those of the last
  ``window`` seconds (the real watch cache keeps about 75 s): every event holds
  an object version, and a cluster left running for a day of status and lease
  writes would otherwise hold gigabytes of them.

All mutation happens on the server's one event-loop thread, so each
read-modify-write in the request handlers is atomic without locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pot import errors

Key = tuple[str, str, str, str]
"""(group, resource, namespace, name); namespace is "" for cluster-scoped objects."""

Obj = dict[str, Any]

LOG_NAME = "objects.jsonl"


@dataclass(frozen=True, slots=True)
class Event:
    """One committed change, as a watch sees it."""

    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    key: Key
    obj: Obj
    prev: Obj | None
    at: float = field(default_factory=time.monotonic)
    """When it was committed (the history's time window)."""


@dataclass(eq=False)
class Watcher:
    """A live subscription to one group/resource (optionally one namespace)."""

    group: str
    resource: str
    namespace: str | None
    since: int = 0
    """Events at or before this revision were already sent (in a list or initial state)."""
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)
    backlog: int = 0
    """How many unsent events it may hold before it is closed (a client that stopped reading)."""

    def wants(self, key: Key) -> bool:
        return (
            key[0] == self.group
            and key[1] == self.resource
            and (self.namespace is None or key[2] == self.namespace)
        )


class TooOld(errors.ClusterError):
    """A watch asked for a resourceVersion older than the history kept (410 Gone)."""

    def __init__(self, asked: int, oldest: int, message: str = "") -> None:
        super().__init__(message or f"too old resource version: {asked} ({oldest})")
        self.asked = asked
        self.oldest = oldest


def _key(k: list[str]) -> Key:
    return (k[0], k[1], k[2], k[3])


class Store:
    """Objects by key, the global revision, the durable log and the watch history."""

    max_backlog = 20_000
    """Unsent events a watcher may fall behind by (beyond its replay) before it is closed."""

    def __init__(
        self,
        directory: Path | None,
        *,
        history: int = 200_000,
        keep: int = 10_000,
        window: float = 900.0,
    ) -> None:
        self._objects: dict[tuple[str, str], dict[tuple[str, str], Obj]] = {}
        self._dependents: dict[str, set[Key]] = {}
        self._uids: dict[str, Key] = {}
        self._deleting: set[Key] = set()
        self._history: deque[Event] = deque(maxlen=history)
        self._keep = keep
        self._window = window
        self._watchers: set[Watcher] = set()
        self.rv = 0
        self.published = 0
        """The revision of the last event handed to watchers: a BOOKMARK may claim no more
        (a write gets its revision at once but is published only after its fsync)."""
        self._oldest = 0
        """Watches may resume from any resourceVersion >= this one."""
        self._fd: int | None = None
        self._unsynced: list[Event] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._syncing: asyncio.Task[None] | None = None
        self._lock_fd: int | None = None
        self.directory = directory
        if directory is not None:
            self._open(directory)

    # -- durability --------------------------------------------------------

    def _open(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(directory / "apiserver.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise errors.ClusterError(
                f"{directory}: another API server already uses this state directory"
            ) from None
        path = directory / LOG_NAME
        if path.exists():
            self._replay(path)
        self._oldest = self.published = self.rv
        tmp = directory / (LOG_NAME + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps({"op": "rv", "rv": self.rv}) + "\n")
            for key, obj in self.items():
                f.write(json.dumps({"op": "put", "rv": self.rv, "k": key, "o": obj}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)

    def _replay(self, path: Path) -> None:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    # A torn record (a crash, or a write cut short by a full disk) was never
                    # acknowledged; a record appended after it on the same line was.
                    start = line.find('{"op":', 1)
                    try:
                        rec = json.loads(line[start:]) if start > 0 else None
                    except json.JSONDecodeError:
                        rec = None
                    if not isinstance(rec, dict):
                        continue
                self.rv = max(self.rv, int(rec.get("rv", 0)))
                if rec["op"] == "put":
                    self._set(_key(rec["k"]), rec["o"])
                elif rec["op"] == "del":
                    self._unset(_key(rec["k"]))

    def _append(self, rec: dict[str, Any]) -> None:
        if self._fd is None:
            return
        data = (json.dumps(rec, separators=(",", ":")) + "\n").encode()
        end = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            written = 0
            while written < len(data):  # a full disk can cut a write short
                written += os.write(self._fd, data[written:])
        except OSError as exc:
            # Leave no torn record for the next one to be appended to.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, end)
            raise errors.ClusterError(f"cannot persist state: {exc.strerror}") from exc

    def flush(self) -> None:
        """Make every write durable now (blocking) and publish its events."""
        if self._fd is not None and self._unsynced:
            os.fsync(self._fd)
        events, self._unsynced = self._unsynced, []
        for ev in events:
            self._publish(ev)

    async def sync(self) -> None:
        """Wait until every write so far is durable (one fsync serves all waiting writers)."""
        if not self._unsynced and not (self._syncing and not self._syncing.done()):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        if self._syncing is None or self._syncing.done():
            self._syncing = asyncio.get_running_loop().create_task(self._sync_loop())
        await fut

    async def _sync_loop(self) -> None:
        while self._waiters:
            waiters, self._waiters = self._waiters, []
            events, self._unsynced = self._unsynced, []
            failure: errors.ClusterError | None = None
            if self._fd is not None and events:
                try:
                    await asyncio.to_thread(os.fsync, self._fd)
                except OSError as exc:
                    failure = errors.ClusterError(f"cannot persist state: {exc.strerror}")
            if failure is None:
                for ev in events:
                    self._publish(ev)
            for w in waiters:
                if w.done():
                    continue
                if failure is None:
                    w.set_result(None)
                else:
                    w.set_exception(failure)

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self.flush()
        for w in list(self._watchers):
            w.queue.put_nowait(None)
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._lock_fd = None

    # -- reads ---------------------------------------------------------------

    def get(self, key: Key) -> Obj | None:
        return self._objects.get((key[0], key[1]), {}).get((key[2], key[3]))

    def objects(self, group: str, resource: str, namespace: str | None = None) -> list[Obj]:
        """Objects of one group/resource, sorted by namespace then name (as etcd keys are)."""
        bucket = self._objects.get((group, resource), {})
        keys = sorted(k for k in bucket if namespace is None or k[0] == namespace)
        return [bucket[k] for k in keys]

    def items(self) -> Iterator[tuple[Key, Obj]]:
        for (g, r), bucket in self._objects.items():
            for (ns, name), obj in bucket.items():
                yield (g, r, ns, name), obj

    def count(self, group: str, resource: str) -> int:
        return len(self._objects.get((group, resource), {}))

    def namespaces_in_use(self, namespace: str) -> list[Key]:
        """Every namespaced object in ``namespace`` (namespace deletion)."""
        out: list[Key] = []
        for (g, r), bucket in self._objects.items():
            out.extend((g, r, ns, name) for (ns, name) in bucket if ns == namespace)
        return out

    def by_uid(self, uid: str) -> Key | None:
        return self._uids.get(uid)

    def orphaned_owner_uids(self) -> list[str]:
        """Owner uids named by some object's ownerReferences that no object has."""
        return [u for u in self._dependents if u not in self._uids]

    def deleting(self) -> list[tuple[Key, Obj]]:
        """Objects with a deletionTimestamp (waiting on finalizers or a kubelet)."""
        out = []
        for key in sorted(self._deleting):
            obj = self.get(key)
            if obj is not None:
                out.append((key, obj))
        return out

    def dependents(self, uid: str) -> list[Key]:
        """Keys of objects that name ``uid`` in their ownerReferences."""
        return sorted(self._dependents.get(uid, ()))

    # -- writes --------------------------------------------------------------

    def _set(self, key: Key, obj: Obj) -> Obj | None:
        bucket = self._objects.setdefault((key[0], key[1]), {})
        old = bucket.get((key[2], key[3]))
        if old is not None:
            self._index_owners(key, old, add=False)
        bucket[(key[2], key[3])] = obj
        self._index_owners(key, obj, add=True)
        return old

    def _unset(self, key: Key) -> Obj | None:
        old = self._objects.get((key[0], key[1]), {}).pop((key[2], key[3]), None)
        if old is not None:
            self._index_owners(key, old, add=False)
        return old

    def _index_owners(self, key: Key, obj: Obj, *, add: bool) -> None:
        meta = obj.get("metadata") or {}
        uid = meta.get("uid")
        if not isinstance(uid, str):
            uid = None
        if add:
            if uid:
                self._uids[uid] = key
            if meta.get("deletionTimestamp"):
                self._deleting.add(key)
        else:
            if uid:
                self._uids.pop(uid, None)
            self._deleting.discard(key)
        refs = meta.get("ownerReferences")
        for ref in refs if isinstance(refs, list) else ():
            # The server refuses malformed references; a log written before it did must
            # still replay.
            uid = ref.get("uid") if isinstance(ref, dict) else None
            if not uid or not isinstance(uid, str):
                continue
            if add:
                self._dependents.setdefault(uid, set()).add(key)
            else:
                keys = self._dependents.get(uid)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._dependents[uid]

    @property
    def oldest(self) -> int:
        """The oldest revision a watch (or a list's continue token) may resume from."""
        return self._oldest

    def next_rv(self) -> int:
        """The revision the next write will get (for objects built before commit)."""
        return self.rv + 1

    def put(self, key: Key, obj: Obj) -> Obj:
        """Create or replace ``key``, stamping the next resourceVersion; durable after :meth:`sync`."""
        self.rv += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
        self._append({"op": "put", "rv": self.rv, "k": key, "o": obj})
        old = self._set(key, obj)
        self._commit(Event(self.rv, "MODIFIED" if old is not None else "ADDED", key, obj, old))
        return obj

    def delete(self, key: Key) -> Obj | None:
        """Remove ``key``; the DELETED event carries the deletion's resourceVersion."""
        old = self.get(key)
        if old is None:
            return None
        self.rv += 1
        self._append({"op": "del", "rv": self.rv, "k": key})
        self._unset(key)
        final = dict(old)
        final["metadata"] = {**old.get("metadata", {}), "resourceVersion": str(self.rv)}
        self._commit(Event(self.rv, "DELETED", key, final, old))
        return final

    # -- watching -------------------------------------------------------------

    def _commit(self, event: Event) -> None:
        if self._fd is None:
            self._publish(event)  # nothing to make durable
        else:
            self._unsynced.append(event)

    def _publish(self, event: Event) -> None:
        if len(self._history) == self._history.maxlen:
            self._oldest = self._history[0].rv
        self._history.append(event)
        horizon = event.at - self._window
        while len(self._history) > self._keep and self._history[0].at < horizon:
            self._oldest = self._history.popleft().rv
        self.published = max(self.published, event.rv)
        stuck = []
        for w in self._watchers:
            if event.rv > w.since and w.wants(event.key):
                if w.queue.qsize() >= w.backlog:
                    stuck.append(w)
                else:
                    w.queue.put_nowait(event)
        for w in stuck:
            # As the real watch cache closes an unresponsive watcher: the stream ends after
            # what it holds, and the client resumes from its last resourceVersion (or relists).
            self._watchers.discard(w)
            w.queue.put_nowait(None)

    def watch(self, group: str, resource: str, namespace: str | None, since: int | None) -> Watcher:
        """Subscribe; with ``since``, first replay history after it (TooOld if gone)."""
        w = Watcher(group, resource, namespace, since or 0)
        if since is not None:
            if since < self._oldest:
                raise TooOld(since, self._oldest)
            if since > self.rv:
                # Not a revision of this store (its state was reset under a running client,
                # which would otherwise wait, silently, until the counter caught up): relist.
                raise TooOld(
                    since,
                    self._oldest,
                    f"resource version {since} is newer than the server's ({self.rv}): "
                    "its history was reset; list again",
                )
            for ev in self._history:
                if ev.rv > since and w.wants(ev.key):
                    w.queue.put_nowait(ev)
        w.backlog = w.queue.qsize() + self.max_backlog
        self._watchers.add(w)
        return w

    def unwatch(self, w: Watcher) -> None:
        self._watchers.discard(w)

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)
