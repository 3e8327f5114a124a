"""The MAC'd TCP transport on loopback: coalesced frames arrive whole and in order; a forged,
replayed, oversized or mis-framed frame closes the session with its reason counted."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from pot.validator import auth, localnet, transport
from pot.validator import messages as m
from pot.validator.rejections import Rejection


def _auths(tmp_path: Path, n: int = 4) -> list[auth.Auth]:
    path, ks = localnet.write_peers(tmp_path, n)
    peers = auth.load_peers(path)
    return [auth.Auth(i, ks[i], peers) for i in range(n)]


async def _until(cond: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError
        await asyncio.sleep(0.01)


async def test_messages_arrive_in_order_in_few_frames(tmp_path: Path) -> None:
    a0, a1 = _auths(tmp_path)[:2]
    got: list[tuple[int, bytes]] = []
    rejected: list[Rejection] = []
    t0 = transport.Transport(
        me=0, authn=a0, on_messages=lambda p, ms: None, on_reject=rejected.append
    )
    t1 = transport.Transport(
        me=1,
        authn=a1,
        on_messages=lambda p, ms: got.extend((p, x) for x in ms),
        on_reject=rejected.append,
    )
    await t1.start("127.0.0.1", a1.peers.replicas[1].pbft_port)
    await t0.start("127.0.0.1", a0.peers.replicas[0].pbft_port)
    try:
        await _until(lambda: 1 in t0.connected)
        sent = [os.urandom(i % 300) for i in range(1000)]
        for x in sent:
            t0.send(1, x)  # one loop turn: coalesced
        await _until(lambda: len(got) == len(sent))
        assert [x for _, x in got] == sent and {p for p, _ in got} == {0}
        assert t0.frames_sent <= 3 and not rejected
    finally:
        await t0.stop()
        await t1.stop()


@pytest.mark.parametrize("fault", ["mac", "replay", "split", "oversized", "unknown-peer"])
async def test_hostile_frames_close_the_session(tmp_path: Path, fault: str) -> None:
    auths = _auths(tmp_path)
    got: list[bytes] = []
    rejected: list[Rejection] = []
    t1 = transport.Transport(
        me=1,
        authn=auths[1],
        on_messages=lambda p, ms: got.extend(ms),
        on_reject=rejected.append,
        max_frame=1 << 16,
    )
    port = auths[1].peers.replicas[1].pbft_port
    await t1.start("127.0.0.1", port)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        me = 9 if fault == "unknown-peer" else 0
        nonce_c = os.urandom(16)
        writer.write(transport.HELLO + me.to_bytes(2, "big") + nonce_c)
        if fault == "unknown-peer":
            await _until(lambda: rejected)
            assert rejected == [Rejection.UNKNOWN_PEER]
            writer.close()
            return
        hello = await reader.readexactly(transport.HELLO_LEN)
        key = auths[0].session_key(1, 0, nonce_c, hello[6:])

        def frame(counter: int, body: bytes, *, tag: bytes | None = None) -> bytes:
            mac = tag if tag is not None else auth.mac(key, counter, body)
            return transport.HEADER.pack(len(body), counter, mac) + body

        good = transport.LENGTH.pack(3) + b"abc"
        writer.write(frame(1, good))
        await _until(lambda: got == [b"abc"])
        bad = {
            "mac": frame(2, good, tag=b"\0" * 16),
            "replay": frame(1, good),
            "split": frame(2, transport.LENGTH.pack(9) + b"abc"),
            "oversized": transport.HEADER.pack(1 << 20, 2, b"\0" * 16),
        }[fault]
        writer.write(bad + frame(3, good))
        await _until(lambda: rejected)
        expected = {
            "mac": Rejection.BAD_AUTHENTICATOR,
            "replay": Rejection.REPLAYED,
            "split": Rejection.MALFORMED,
            "oversized": Rejection.OVERSIZED,
        }[fault]
        assert rejected == [expected] and got == [b"abc"]  # nothing after the bad frame
        assert await reader.read() == b""  # closed
        writer.close()
    finally:
        await t1.stop()


def test_session_keys_differ_per_connection_and_direction(tmp_path: Path) -> None:
    a0, a1 = _auths(tmp_path)[:2]
    n1, n2 = os.urandom(16), os.urandom(16)
    assert a0.session_key(1, 0, n1, n2) == a1.session_key(0, 0, n1, n2)  # both ends agree
    assert a0.session_key(1, 0, n1, n2) != a0.session_key(1, 0, n2, n1)
    assert a0.session_key(1, 0, n1, n2) != a0.session_key(1, 1, n1, n2)


# ------------------------------------------------------------ before authentication


async def _session(
    auths: list[auth.Auth], port: int, me: int = 0
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """A raw inbound session to replica 1 as replica ``me``: hello done, nothing framed yet."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    nonce_c = os.urandom(16)
    writer.write(transport.HELLO + me.to_bytes(2, "big") + nonce_c)
    hello = await reader.readexactly(transport.HELLO_LEN)
    return reader, writer, auths[me].session_key(1, me, nonce_c, hello[6:])


def _frame(key: bytes, counter: int, body: bytes) -> bytes:
    return transport.HEADER.pack(len(body), counter, auth.mac(key, counter, body)) + body


async def _closed(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionError:
        return True


async def test_unauthenticated_big_frame_refused_from_its_header(tmp_path: Path) -> None:
    """Regression: a keyless hello then a 32 MiB header made the receiver buffer the frame."""
    auths = _auths(tmp_path)
    rejected: list[Rejection] = []
    t1 = transport.Transport(
        me=1, authn=auths[1], on_messages=lambda p, ms: None, on_reject=rejected.append
    )
    port = auths[1].peers.replicas[1].pbft_port
    await t1.start("127.0.0.1", port)
    try:
        reader, writer, _ = await _session(auths, port)
        writer.write(transport.HEADER.pack(transport.PREAUTH_FRAME + 1, 1, b"\0" * 16))
        writer.write(b"\0" * (256 << 10))
        assert await _closed(reader)
        assert rejected == [Rejection.OVERSIZED] and not t1.unauthenticated
        writer.close()
        # The same size passes once the session's first (empty) frame has authenticated.
        reader, writer, key = await _session(auths, port)
        body = transport.LENGTH.pack(transport.PREAUTH_FRAME) + b"x" * transport.PREAUTH_FRAME
        writer.write(_frame(key, 1, b"") + _frame(key, 2, body))
        await _until(lambda: t1.frames_received == 2)
        assert rejected == [Rejection.OVERSIZED] and t1.sessions[0]
        writer.close()
    finally:
        await t1.stop()


async def test_unauthenticated_sessions_are_timed_out_and_capped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "AUTH_TIMEOUT_S", 0.3)
    monkeypatch.setattr(transport, "MAX_UNAUTHENTICATED", 2)
    auths = _auths(tmp_path)
    t1 = transport.Transport(
        me=1, authn=auths[1], on_messages=lambda p, ms: None, on_reject=lambda r: None
    )
    port = auths[1].peers.replicas[1].pbft_port
    await t1.start("127.0.0.1", port)
    try:
        sessions = [await _session(auths, port) for _ in range(3)]
        assert await _closed(sessions[0][0])  # over the cap: the oldest went first
        assert len(t1.unauthenticated) == 2
        start = asyncio.get_running_loop().time()
        assert await _closed(sessions[2][0])  # hello but no frame: cut at the deadline
        assert asyncio.get_running_loop().time() - start < 2
        await _until(lambda: not t1.unauthenticated)
        for _, w, _ in sessions:
            w.close()
    finally:
        await t1.stop()


async def test_one_live_session_per_peer(tmp_path: Path) -> None:
    auths = _auths(tmp_path)
    got: list[bytes] = []
    t1 = transport.Transport(
        me=1, authn=auths[1], on_messages=lambda p, ms: got.extend(ms), on_reject=lambda r: None
    )
    port = auths[1].peers.replicas[1].pbft_port
    await t1.start("127.0.0.1", port)
    try:
        r_old, w_old, k_old = await _session(auths, port)
        w_old.write(_frame(k_old, 1, b""))
        await _until(lambda: 0 in t1.sessions)
        old = t1.sessions[0]
        _, w_new, k_new = await _session(auths, port)  # a hello alone displaces nothing
        await asyncio.sleep(0.05)
        assert t1.sessions[0] is old
        w_new.write(_frame(k_new, 1, transport.LENGTH.pack(3) + b"new"))
        assert await _closed(r_old)  # the authenticated newcomer replaced it
        assert got == [b"new"] and t1.sessions[0] is not old
        w_old.close()
        w_new.close()
    finally:
        await t1.stop()


async def test_big_state_reply_passes_other_big_messages_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A STATE-REPLY may exceed ``max_frame`` (snapshots up to 1 GiB, docs/protocol.md);
    anything else that big is dropped with an error naming its size."""
    a0, a1 = _auths(tmp_path)[:2]
    got: list[bytes] = []
    rejected: list[Rejection] = []
    t0, t1 = (
        transport.Transport(
            me=i,
            authn=a,
            on_messages=lambda p, ms: got.extend(ms),
            on_reject=rejected.append,
            max_frame=1 << 16,
            max_state_frame=1 << 20,
        )
        for i, a in enumerate((a0, a1))
    )
    await t1.start("127.0.0.1", a1.peers.replicas[1].pbft_port)
    await t0.start("127.0.0.1", a0.peers.replicas[0].pbft_port)
    caplog.set_level(logging.ERROR, logger=transport.log.name)  # `pot simulate` mutes it
    try:
        reply = m.encode(
            m.StateReply(seq=64, digest=b"\1" * 32, snapshot=b"s" * (512 << 10), replica=0)
        )
        big = m.encode(m.Request(client="c", ts=1, op=b"o" * (200 << 10)))
        for payload in (b"before", big, reply, b"after"):
            t0.send(1, payload)
        await _until(lambda: got[-1:] == [b"after"])
        assert got == [b"before", reply, b"after"] and not rejected
        assert f"{len(big)}-byte message" in caplog.text
    finally:
        await t0.stop()
        await t1.stop()
