"""The MAC'd TCP transport on loopback: coalesced frames arrive whole and in order; a forged,
replayed, oversized or mis-framed frame closes the session with its reason counted."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from pot.validator import auth, localnet, transport
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
