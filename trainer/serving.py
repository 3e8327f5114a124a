"""The trainer pod's HTTP endpoint on port 8090: checkpoint blobs and metrics.

Validators fetch the checkpoints a segment names from the miner that claims
it (``storeUrl``), so each node serves its content store read-only
(``pot.storeserving``) next to ``/metrics`` and the probes
(``pot.observability``). Training is synchronous torch code; the server runs
its own asyncio loop on a daemon thread so it never stalls a step.

A node that lost its disk (its pod rescheduled onto a fresh node) no longer
holds the checkpoints of the segments it published before, and validators
still audit those at its address. Every node's checkpoints are the same bytes
(DDP keeps the replicas identical; the CIDs match), so ``PeerStore`` answers a
miss from the gang's other nodes, checks the hash and keeps a copy. Peers are
asked on ``/local/v1/blobs/{cid}``, which never asks further, so two nodes
missing a blob cannot ask each other in a loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable

from aiohttp import web

from pot import errors, observability, store, storeserving

log = logging.getLogger("pot.trainer")


class PeerStore:
    """This node's store, falling back to the gang's other nodes on a miss."""

    def __init__(self, local: store.ContentStore, *, timeout: float = 10.0) -> None:
        self.local = local
        self.timeout = timeout
        self._peers: tuple[store.HttpStore, ...] = ()

    def __repr__(self) -> str:
        return f"PeerStore({self.local!r}, peers={[p.base_url for p in self._peers]})"

    def set_peers(self, urls: Iterable[str], *, own: str = "") -> None:
        """The other nodes' advertised store URLs (``own`` is skipped)."""
        mine = own.rstrip("/")
        self._peers = tuple(
            store.HttpStore(f"{u.rstrip('/')}/local", timeout=self.timeout)
            for u in urls
            if u and u.rstrip("/") != mine
        )

    def put(self, data: bytes) -> str:
        return self.local.put(data)

    def has(self, cid: str) -> bool:
        return self.local.has(cid)

    def get(self, cid: str, *, max_bytes: int | None = None) -> bytes:
        try:
            return self.local.get(cid, max_bytes=max_bytes)
        except errors.BlobNotFound:
            pass
        for peer in self._peers:
            try:
                data = peer.get(cid, max_bytes=max_bytes)  # hash-checked by HttpStore
            except (errors.BlobNotFound, errors.StoreError) as exc:
                log.debug("blob %s not from %s: %s", cid, peer.base_url, exc)
                continue
            self.local.put(data)
            return data
        raise errors.BlobNotFound(f"blob {cid} not on this node nor its {len(self._peers)} peers")


class Server:
    """aiohttp on a background thread; ``port`` 0 binds an ephemeral port."""

    def __init__(self, blobs: store.ContentStore, *, host: str = "0.0.0.0", port: int = 8090):  # noqa: S104 (pod IP)
        self.blobs = blobs
        self.host = host
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pot-trainer-http", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        except OSError as exc:
            self._error = exc
            self._loop.close()
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        app = web.Application()
        storeserving.add_routes(app, self.blobs)
        if isinstance(self.blobs, PeerStore):  # what peers ask: this node's own blobs only
            storeserving.add_routes(app, self.blobs.local, prefix="/local")
        observability.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        if server is not None and self.port == 0:
            sockets = getattr(server, "sockets", None) or []
            if sockets:
                self.port = int(sockets[0].getsockname()[1])

    def start(self) -> Server:
        """Serve; TrainingError if the port cannot be bound."""
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._error is not None:
            raise errors.TrainingError(
                f"cannot serve the store on {self.host}:{self.port}: {self._error}"
            ) from self._error
        return self

    def stop(self) -> None:
        """Stop serving."""
        if not self._thread.is_alive():
            return
        runner = self._runner

        async def shutdown() -> None:
            if runner is not None:
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()
