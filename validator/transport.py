"""Replica-to-replica transport: asyncio TCP, persistent connections, MAC'd frames.

One outbound connection per peer carries everything this replica sends to it
(reconnecting with backoff); inbound connections only receive. A frame is
``len:u32 ‖ counter:u64 ‖ mac:16 ‖ payload`` after a handshake in which both
sides exchange ``"POT1" ‖ id:u16 ‖ nonce:16`` (see ``auth``).

Backpressure: each peer has a bounded send queue; when a peer is slow or down
the oldest frames are dropped rather than growing memory without bound. PBFT
tolerates loss by design (its retransmission is the STATUS beacon, TOCS §5.2),
so dropping is safe, and writes ``await drain()`` so the kernel buffer, not
Python memory, absorbs bursts. Frames over ``max_frame`` are refused before
being read (``OVERSIZED``); a bad MAC or counter closes the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
from collections import deque
from collections.abc import Callable

from pot.validator import auth
from pot.validator.rejections import Rejection

log = logging.getLogger(__name__)

HELLO = b"POT1"
HELLO_LEN = 4 + 2 + 16
HEADER = struct.Struct(">IQ16s")
MAX_FRAME = 32 << 20
QUEUE_LIMIT = 20_000


class Transport:
    def __init__(
        self,
        *,
        me: int,
        authn: auth.Auth,
        on_message: Callable[[int, bytes], None],
        on_reject: Callable[[Rejection], None],
        max_frame: int = MAX_FRAME,
    ) -> None:
        self.me = me
        self.auth = authn
        self.on_message = on_message
        self.on_reject = on_reject
        self.max_frame = max_frame
        self.queues: dict[int, deque[bytes]] = {p: deque(maxlen=QUEUE_LIMIT) for p in authn.pair}
        self.wakeups: dict[int, asyncio.Event] = {p: asyncio.Event() for p in authn.pair}
        self.tasks: list[asyncio.Task[None]] = []
        self.server: asyncio.Server | None = None
        self.connected: set[int] = set()
        self.inbound: set[asyncio.StreamWriter] = set()

    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.start_server(self._inbound, host, port, limit=1 << 20)
        for p in self.queues:
            self.tasks.append(asyncio.create_task(self._outbound(p), name=f"pbft-out-{p}"))

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.server is not None:
            self.server.close()
            for w in list(self.inbound):  # handlers then end on EOF instead of being cancelled
                w.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 1)

    def send(self, to: int, payload: bytes) -> None:
        q = self.queues.get(to)
        if q is None:
            return
        q.append(payload)
        self.wakeups[to].set()

    # ------------------------------------------------------------ outbound

    async def _outbound(self, peer: int) -> None:
        host, port = self.auth.peers.replicas[peer].host, self.auth.peers.replicas[peer].pbft_port
        backoff = 0.05
        while True:
            writer: asyncio.StreamWriter | None = None
            try:
                reader, w = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
                writer = w
                nonce_c = os.urandom(16)
                w.write(HELLO + self.me.to_bytes(2, "big") + nonce_c)
                hello = await asyncio.wait_for(reader.readexactly(HELLO_LEN), 5)
                if hello[:4] != HELLO or int.from_bytes(hello[4:6], "big") != peer:
                    raise ConnectionError("bad hello")
                key = self.auth.session_key(peer, self.me, nonce_c, hello[6:])
                backoff = 0.05
                self.connected.add(peer)
                await self._pump(peer, w, key)
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ConnectionError) as exc:
                log.debug("replica %d → %d: %s", self.me, peer, exc)
            finally:
                self.connected.discard(peer)
                if writer is not None:
                    writer.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    async def _pump(self, peer: int, writer: asyncio.StreamWriter, key: bytes) -> None:
        q, wake = self.queues[peer], self.wakeups[peer]
        counter = 0
        while True:
            if not q:
                wake.clear()
                await wake.wait()
            while q:
                payload = q.popleft()
                counter += 1
                writer.write(
                    HEADER.pack(len(payload), counter, auth.mac(key, counter, payload)) + payload
                )
                if writer.transport.get_write_buffer_size() > 1 << 20:
                    break
            await writer.drain()

    # ------------------------------------------------------------ inbound

    async def _inbound(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.inbound.add(writer)
        try:
            hello = await asyncio.wait_for(reader.readexactly(HELLO_LEN), 5)
            peer = int.from_bytes(hello[4:6], "big")
            if hello[:4] != HELLO or peer not in self.auth.pair:
                self.on_reject(Rejection.UNKNOWN_PEER)
                return
            nonce_s = os.urandom(16)
            writer.write(HELLO + self.me.to_bytes(2, "big") + nonce_s)
            await writer.drain()
            key = self.auth.session_key(peer, peer, hello[6:], nonce_s)
            last = 0
            while True:
                header = await reader.readexactly(HEADER.size)
                length, counter, tag = HEADER.unpack(header)
                if length > self.max_frame:
                    self.on_reject(Rejection.OVERSIZED)
                    return
                payload = await reader.readexactly(length)
                if not auth.mac_ok(key, counter, payload, tag):
                    self.on_reject(Rejection.BAD_AUTHENTICATOR)
                    return
                if counter <= last:
                    self.on_reject(Rejection.REPLAYED)
                    return
                last = counter
                self.on_message(peer, payload)
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            self.inbound.discard(writer)
            writer.close()
