"""A client that trickles its request (body or headers) loses the connection in bounded time.

aiohttp reads a body only as the handler asks for it, with no timeout, and keeps a
connection with no complete request for an hour (``keepalive_timeout``'s default). Before,
the validator API set neither: each client sending a byte now and then held a connection and
a handler as long as it liked. Real aiohttp server on loopback (``api.serve``), raw sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from pot.validator import api
from tests.validator import node_kit

BODY_S, KEEPALIVE_S, LINGER_S = 0.5, 1.0, 0.5


async def _trickle(port: int, head: bytes, drip: bytes, limit: float) -> tuple[bytes, float]:
    """Send ``head``, then ``drip`` a byte every 50 ms; what came back, and when it closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(head)

    async def drain() -> bytes:
        got = b""
        while chunk := await reader.read(4096):
            got += chunk
        return got

    reading = asyncio.create_task(drain())
    for byte in drip:
        if reading.done():
            break
        writer.write(bytes([byte]))
        await asyncio.sleep(0.05)
    await asyncio.wait([reading], timeout=limit)
    took = time.monotonic() - started
    writer.close()
    if not reading.done():
        reading.cancel()
        return b"", float("inf")  # still open
    return (b"" if reading.exception() else reading.result()), took


def test_slow_bodies_and_slow_headers_are_cut_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api, "BODY_TIMEOUT_S", BODY_S)
    monkeypatch.setattr(api, "KEEPALIVE_S", KEEPALIVE_S)
    monkeypatch.setattr(api, "LINGER_S", LINGER_S)
    stack = contextlib.ExitStack()
    node, _ = stack.enter_context(node_kit.api_node(tmp_path))

    async def go() -> None:
        runner = await api.serve(node, "127.0.0.1", 0)
        port = runner.addresses[0][1]
        try:
            head = b"POST /v1/segments HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
            got, took = await _trickle(port, head, b"{" * 200, 5)
            assert got.startswith(b"HTTP/1.1 408"), (got[:200], took)
            assert took < BODY_S + LINGER_S + 1.0, took
            slow_head = b"POST /v1/segments HTTP/1.1\r\nHost: x\r\nX-Pad: "
            got, took = await _trickle(port, slow_head, b"a" * 200, 5)
            assert got == b"" and took < KEEPALIVE_S + 1.0, (got[:200], took)
            # A client that sends its body at once is not affected.
            head = b"POST /v1/segments HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
            got, _ = await _trickle(port, head, b"", 10)
            assert got.startswith(b"HTTP/1.1 400"), got[:200]
        finally:
            await runner.cleanup()

    try:
        asyncio.run(go())
    finally:
        stack.close()
