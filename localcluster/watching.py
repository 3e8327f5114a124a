"""Watch streams: ``GET ...?watch=true`` as newline-delimited JSON events.

Semantics from the API concepts page ("Efficient detection of changes"):

* ``resourceVersion`` unset or ``"0"``: synthetic ADDED events for every
  current object, then changes; ``"N"``: every change after N, or, when N is
  older than the history kept, a single ERROR event carrying a 410 Expired
  ``Status`` (what the watch cache answers; client-go and kopf relist on it);
* ``sendInitialEvents=true`` (watch-list): the current state, then a BOOKMARK
  annotated ``k8s.io/initial-events-end``;
* ``allowWatchBookmarks=true``: periodic BOOKMARK events carrying the latest
  resourceVersion, so clients resume without relisting;
* selectors are applied to both the old and the new object, so an object that
  stops matching is seen as DELETED and one that starts matching as ADDED;
* ``timeoutSeconds`` ends the stream cleanly (clients reconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from pot.localcluster import handling, statuses, tables
from pot.localcluster.resources import ResourceType
from pot.localcluster.storage import Event, Obj, Store, TooOld

Matcher = Callable[[Obj], bool]


async def serve(
    request: web.Request,
    *,
    store: Store,
    t: ResourceType,
    namespace: str | None,
    match: Matcher,
    bookmark_interval: float,
) -> web.StreamResponse:
    q = request.query
    rv_param = q.get("resourceVersion", "")
    initial = rv_param in ("", "0") or q.get("sendInitialEvents") == "true"
    bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
    timeout = float(q.get("timeoutSeconds") or 3600)
    as_table = tables.wants_table(request.headers.get("Accept", ""))
    include = q.get("includeObject", "Metadata")
    ns = namespace if t.namespaced else None

    resp = web.StreamResponse(
        headers={"Content-Type": "application/json", "Cache-Control": "no-cache, private"}
    )
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    first = True

    pending: list[bytes] = []

    def queue_line(kind: str, obj: Obj) -> None:
        nonlocal first
        if as_table and kind in ("ADDED", "MODIFIED", "DELETED"):
            obj = tables.table(t, [obj], include=include, headers=first)
            first = False
        pending.append(
            json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"
        )

    async def flush() -> None:
        # One write per burst of events: a write awaits the socket drain.
        if pending:
            data = b"".join(pending)
            pending.clear()
            await resp.write(data)

    async def send(kind: str, obj: Obj) -> None:
        queue_line(kind, obj)
        await flush()

    def bookmark(rv: int, extra: dict[str, Any] | None = None) -> Obj:
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if extra:
            meta["annotations"] = extra
        return {"kind": t.kind, "apiVersion": t.api_version, "metadata": meta}

    try:
        since = store.rv if initial else int(rv_param)
    except ValueError:
        err = statuses.bad_request(f"invalid resourceVersion {rv_param!r}")
        await send("ERROR", err.status())
        return resp
    try:
        watcher = store.watch(t.group, t.resource, ns, since)
    except TooOld as exc:
        await send("ERROR", statuses.gone(str(exc)).status())
        return resp
    snapshot = (
        [handling.present(t, o) for o in store.objects(t.group, t.resource, ns)] if initial else []
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        for obj in snapshot:
            if match(obj):
                queue_line("ADDED", obj)
        await flush()
        if q.get("sendInitialEvents") == "true" and bookmarks:
            # The snapshot's revision: later writes may still sit unsent in the queue.
            await send("BOOKMARK", bookmark(since, {"k8s.io/initial-events-end": "true"}))
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            wait = min(remaining, bookmark_interval) if bookmarks else remaining
            try:
                ev = await asyncio.wait_for(watcher.queue.get(), wait)
            except TimeoutError:
                if bookmarks and loop.time() < deadline:
                    # The queue is empty, so every published event is sent; a write whose
                    # fsync is still running has its revision but no event yet, and a
                    # client resuming from a bookmark past it would never see it.
                    await send("BOOKMARK", bookmark(max(since, store.published)))
                continue
            batch = [ev]
            while len(batch) < 1000 and not watcher.queue.empty():
                batch.append(watcher.queue.get_nowait())
            closing = False
            for item in batch:
                if item is None:
                    closing = True
                    break
                _translate(item, t, match, queue_line)
            await flush()
            if closing:
                break
    except ConnectionResetError:
        return resp
    finally:
        store.unwatch(watcher)
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        await resp.write_eof()
    return resp


def _translate(
    ev: Event, t: ResourceType, match: Matcher, emit: Callable[[str, Obj], None]
) -> None:
    """A store event as the watcher sees it through its selectors."""
    new, old = handling.present(t, ev.obj), ev.prev
    if ev.type == "DELETED":
        if match(new):
            emit("DELETED", new)
        return
    now_m = match(new)
    was_m = old is not None and match(handling.present(t, old))
    if ev.type == "ADDED" or not was_m:
        if now_m:
            emit("ADDED", new)
    elif now_m:
        emit("MODIFIED", new)
    else:
        emit("DELETED", new)
