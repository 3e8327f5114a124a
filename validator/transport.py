"""Replica-to-replica transport: asyncio TCP, persistent connections, MAC'd frames.

One outbound connection per peer carries everything this replica sends to it
(reconnecting with backoff); inbound connections only receive. After a
handshake in which both sides exchange ``"POT1" ‖ id:u16 ‖ nonce:16`` (see
``auth``), the stream is a sequence of frames
``len:u32 ‖ counter:u64 ‖ mac:16 ‖ body``, and a body is one or more
``len:u32 ‖ message`` (docs/protocol.md "PBFT transport").

Coalescing: the sender packs every message queued for a peer since its last
write into one frame (one MAC, one ``write`` syscall), so a loop turn that
multicasts a PRE-PREPARE and a COMMIT, or answers a STATUS with a few
retransmissions, costs one frame per peer; the receiver is an
``asyncio.Protocol`` that parses every whole frame of each read at once and
hands the messages over in one call (which lets the shell group-commit its log
once for all of them).

Authentication and replay protection are per frame: the MAC (keyed BLAKE2b
under the session key) covers the counter and the whole body, the counter must
strictly increase within a session, and session keys are fresh per connection,
so no message can be replayed, reordered into another session, or cut out of
its frame. A bad MAC or counter, a frame over the limit (refused from its
header, before being read) or a body that does not split into whole messages
closes the session and is counted.

Nothing unauthenticated may cost much memory: anyone can connect and send a
hello, and a MAC can only be checked once the whole frame is in. So the
connecting side's first frame is empty (it only authenticates the session),
and until a frame has authenticated, the receiver refuses frames over
``PREAUTH_FRAME`` and closes a session that has not authenticated within
``AUTH_TIMEOUT_S``; at most ``MAX_UNAUTHENTICATED`` such sessions are held
(the oldest goes first). Each peer has one live inbound session: a new one
replaces the old once it authenticates. After that, frames may be up to
``max_frame``, except that a frame holding a lone STATE-REPLY may be up to
``max_state_frame`` (a snapshot is up to 1 GiB, docs/protocol.md).

Backpressure: each peer has a bounded send queue; when a peer is slow or down
the oldest messages are dropped rather than growing memory without bound. PBFT
tolerates loss by design (its retransmission is the STATUS beacon, TOCS §5.2),
so dropping is safe, and writes ``await drain()`` past 1 MiB buffered so the
kernel buffer, not Python memory, absorbs bursts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
from collections import deque
from collections.abc import Callable

from pot.validator import auth, window
from pot.validator import messages as m
from pot.validator.rejections import Rejection

log = logging.getLogger(__name__)

HELLO = b"POT1"
HELLO_LEN = 4 + 2 + 16
HEADER = struct.Struct(">IQ16s")
LENGTH = struct.Struct(">I")
MAX_FRAME = window.FRAME
"""Bounds every message but a STATE-REPLY; ``window`` keeps VIEW-CHANGE and NEW-VIEW under it."""
FRAME_TARGET = 1 << 20
"""Stop adding messages to a frame past this size (a single bigger message still goes)."""
MAX_STATE_FRAME = m.MAX_SNAPSHOT + 1024
"""A frame holding a lone STATE-REPLY (snapshot up to ``messages.MAX_SNAPSHOT``) and its header."""
PREAUTH_FRAME = 64 << 10
"""The largest frame a session accepts before one of its frames has authenticated."""
AUTH_TIMEOUT_S = 5.0
"""An inbound session must authenticate a frame within this long of connecting."""
MAX_UNAUTHENTICATED = 64
"""Inbound sessions held before authenticating; past it the oldest is closed."""
QUEUE_LIMIT = 20_000
_STATE_REPLY_TAG = bytes((m.T_STATE_REPLY,))


class Transport:
    def __init__(
        self,
        *,
        me: int,
        authn: auth.Auth,
        on_messages: Callable[[int, list[bytes]], None],
        on_reject: Callable[[Rejection], None],
        max_frame: int = MAX_FRAME,
        max_state_frame: int = MAX_STATE_FRAME,
    ) -> None:
        self.me = me
        self.auth = authn
        self.on_messages = on_messages
        self.on_reject = on_reject
        self.max_frame = max_frame
        self.max_state_frame = max(max_state_frame, max_frame)
        self.queues: dict[int, deque[bytes]] = {p: deque(maxlen=QUEUE_LIMIT) for p in authn.pair}
        self.wakeups: dict[int, asyncio.Event] = {p: asyncio.Event() for p in authn.pair}
        self.tasks: list[asyncio.Task[None]] = []
        self.server: asyncio.Server | None = None
        self.connected: set[int] = set()
        self.inbound: set[asyncio.Transport] = set()
        self.sessions: dict[int, _Inbound] = {}
        """The live authenticated inbound session of each peer."""
        self.unauthenticated: dict[_Inbound, None] = {}
        """Inbound sessions not yet authenticated, oldest first."""
        self.frames_sent = 0
        self.frames_received = 0

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Inbound(self), host, port)
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
            for tr in list(self.inbound):
                tr.close()
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
        pack = LENGTH.pack
        counter = 1  # an empty first frame authenticates the session (PREAUTH_FRAME)
        writer.write(HEADER.pack(0, counter, auth.mac(key, counter, b"")))
        self.frames_sent += 1
        while True:
            if not q:
                wake.clear()
                await wake.wait()
            if writer.transport.is_closing():
                raise ConnectionError("connection lost")
            parts: list[bytes] = []
            size = 0
            while q and size < FRAME_TARGET:
                payload = q.popleft()
                if len(payload) + 4 > self.max_frame:
                    if payload[:1] == _STATE_REPLY_TAG and len(payload) + 4 <= self.max_state_frame:
                        if parts:  # a big STATE-REPLY goes alone, in the next frame
                            q.appendleft(payload)
                        else:
                            parts = [pack(len(payload)), payload]
                        break
                    log.error(
                        "replica %d → %d: %d-byte message (type %d) dropped: over the %d-byte "
                        "frame limit",
                        self.me,
                        peer,
                        len(payload),
                        payload[0] if payload else -1,
                        self.max_frame,
                    )
                    continue
                if size + 4 + len(payload) > self.max_frame:
                    q.appendleft(payload)
                    break
                parts.append(pack(len(payload)))
                parts.append(payload)
                size += 4 + len(payload)
            if not parts:
                continue
            body = b"".join(parts)
            counter += 1
            writer.writelines([HEADER.pack(len(body), counter, auth.mac(key, counter, body)), body])
            self.frames_sent += 1
            if writer.transport.get_write_buffer_size() > 1 << 20:
                await writer.drain()


class _Inbound(asyncio.Protocol):
    """One inbound session: handshake, then frames parsed straight from the read buffer."""

    def __init__(self, t: Transport) -> None:
        self.t = t
        self.buf = bytearray()
        self.peer = -1
        self.key = b""
        self.last = 0
        self.limit = min(PREAUTH_FRAME, t.max_frame)
        """Frame size limit: small until a frame has authenticated, then ``max_frame``."""
        self.tr: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.tr = transport
        t = self.t
        t.inbound.add(transport)
        t.unauthenticated[self] = None
        if len(t.unauthenticated) > MAX_UNAUTHENTICATED:
            oldest = next(iter(t.unauthenticated))
            del t.unauthenticated[oldest]
            oldest.close()
        self.timer = asyncio.get_running_loop().call_later(AUTH_TIMEOUT_S, self._deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        t = self.t
        if self.tr is not None:
            t.inbound.discard(self.tr)
        t.unauthenticated.pop(self, None)
        if t.sessions.get(self.peer) is self:
            del t.sessions[self.peer]
        self.buf.clear()

    def close(self) -> None:
        self.buf.clear()
        if self.tr is not None:
            self.tr.close()

    def _deadline(self) -> None:
        if self in self.t.unauthenticated:  # not authenticated in time
            self.close()

    def _authenticated(self) -> None:
        """The first frame verified: lift the frame limit, replace the peer's older session."""
        t = self.t
        self.limit = t.max_frame
        t.unauthenticated.pop(self, None)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        old = t.sessions.get(self.peer)
        t.sessions[self.peer] = self
        if old is not None and old is not self:
            old.close()

    def _state_frame(self, off: int, length: int) -> bool | None:
        """Whether the oversized frame at ``off`` may pass as a lone STATE-REPLY (authenticated
        sessions only); None until its first message's header is in."""
        if not self.last or length > self.t.max_state_frame:
            return False
        at = off + HEADER.size
        if len(self.buf) < at + LENGTH.size + 1:
            return None
        (inner,) = LENGTH.unpack_from(self.buf, at)
        return inner == length - LENGTH.size and self.buf[at + LENGTH.size] == m.T_STATE_REPLY

    def _refuse(self, reason: Rejection) -> None:
        self.t.on_reject(reason)
        self.buf.clear()
        if self.tr is not None:
            self.tr.close()

    def data_received(self, data: bytes) -> None:
        if self.tr is None or self.tr.is_closing():
            return
        buf = self.buf
        buf += data
        if self.peer < 0:
            if len(buf) < HELLO_LEN:
                return
            hello = bytes(buf[:HELLO_LEN])
            del buf[:HELLO_LEN]
            peer = int.from_bytes(hello[4:6], "big")
            if hello[:4] != HELLO or peer not in self.t.auth.pair:
                self._refuse(Rejection.UNKNOWN_PEER)
                return
            nonce_s = os.urandom(16)
            self.tr.write(HELLO + self.t.me.to_bytes(2, "big") + nonce_s)
            self.key = self.t.auth.session_key(peer, peer, hello[6:], nonce_s)
            self.peer = peer
        messages: list[bytes] = []
        off, size = 0, len(buf)
        while size - off >= HEADER.size:
            length, counter, tag = HEADER.unpack_from(buf, off)
            if length > self.limit:
                big = self._state_frame(off, length)
                if big is None:
                    break
                if not big:
                    self._refuse(Rejection.OVERSIZED)
                    return
            end = off + HEADER.size + length
            if end > size:
                break
            body = bytes(buf[off + HEADER.size : end])
            off = end
            if not auth.mac_ok(self.key, counter, body, tag):
                self._refuse(Rejection.BAD_AUTHENTICATOR)
                return
            if counter <= self.last:
                self._refuse(Rejection.REPLAYED)
                return
            if not self.last:
                self._authenticated()
            self.last = counter
            self.t.frames_received += 1
            if not _split(body, messages):
                self._refuse(Rejection.MALFORMED)
                return
        if off:
            del buf[:off]
        if messages:
            self.t.on_messages(self.peer, messages)


def _split(body: bytes, out: list[bytes]) -> bool:
    """Append the messages of one frame body to ``out``; False if it does not split exactly."""
    i, size = 0, len(body)
    unpack = LENGTH.unpack_from
    while i < size:
        if i + 4 > size:
            return False
        (n,) = unpack(body, i)
        j = i + 4 + n
        if j > size:
            return False
        out.append(body[i + 4 : j])
        i = j
    return True
