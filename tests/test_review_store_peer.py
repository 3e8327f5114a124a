"""A miner's store server is hostile: whatever its URL or its answers, an ``HttpStore`` read
ends in a ``StoreError`` (the miner's ``MISSING_BLOB``) within its deadline, never in another
exception (an ``AUDIT_ERROR`` at the validator: no slash) and never at a host it redirects to."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from pot import cids, errors, store

CID = cids.cid_of(b"checkpoint")


@pytest.mark.parametrize(
    "url",
    [
        "",  # a segment's storeUrl may be any string
        "notaurl",
        "ftp://127.0.0.1:9",
        "file:///etc",
        "data:,x",
        "http://a..b",  # idna: "label empty or too long" is a UnicodeError
        "http://[::1",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:9/\u00e9",
        "http://127.0.0.1:9/a b",
        "http://127.0.0.1:9/?q=1",
    ],
)
def test_any_store_url_fails_as_a_store_error(url: str) -> None:
    with pytest.raises(errors.StoreError):
        store.HttpStore(url, timeout=2).get(CID)
    assert store.HttpStore(url, timeout=2).has(CID) is False


class _Server:
    """A loopback TCP server running ``handle(conn)`` for each connection."""

    def __init__(self, handle: object) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.handle = handle
        self.hits = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.hits += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                self.handle(conn)  # type: ignore[operator]
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def servers() -> Iterator[list[_Server]]:
    made: list[_Server] = []
    yield made
    for s in made:
        s.close()


def _drip_headers(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    for _ in range(400):  # 20 s of one header byte every 50 ms
        conn.sendall(b"a")
        time.sleep(0.05)


def test_the_deadline_covers_a_response_whose_headers_drip(servers: list[_Server]) -> None:
    """The socket timeout is per read; only the deadline bounds a peer that never finishes
    its status line or headers (it held an audit slot, one of ``maxConcurrent``, for ever)."""
    servers.append(_Server(_drip_headers))
    remote = store.HttpStore(f"http://127.0.0.1:{servers[0].port}", timeout=5, deadline=0.5)
    began = time.monotonic()
    with pytest.raises(errors.StoreError, match=r"not read in 0\.5 s"):
        remote.get(CID)
    assert time.monotonic() - began < 3


def test_redirects_are_not_followed(servers: list[_Server]) -> None:
    """A store may not send the validator elsewhere (another host, its own localhost)."""
    body = b"checkpoint"

    def target(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    servers.append(_Server(target))
    where = f"http://127.0.0.1:{servers[0].port}/v1/blobs/{CID}"

    def redirect(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.0 302 Found\r\nLocation: %s\r\n\r\n" % where.encode())

    servers.append(_Server(redirect))
    remote = store.HttpStore(f"http://127.0.0.1:{servers[1].port}", timeout=5)
    with pytest.raises(errors.StoreError, match="HTTP 302"):
        remote.get(CID)
    assert servers[0].hits == 0


def test_a_body_cut_short_is_a_store_error(servers: list[_Server]) -> None:
    def short(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nchec")

    servers.append(_Server(short))
    remote = store.HttpStore(f"http://127.0.0.1:{servers[0].port}", timeout=5)
    with pytest.raises(errors.StoreError, match="cut short"):
        remote.get(CID)


def test_chunked_bodies_are_capped(servers: list[_Server]) -> None:
    def endless(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(10_000):
            conn.sendall(b"400\r\n" + b"x" * 1024 + b"\r\n")

    servers.append(_Server(endless))
    remote = store.HttpStore(f"http://127.0.0.1:{servers[0].port}", timeout=5, max_bytes=50_000)
    with pytest.raises(errors.StoreError, match="more than 50000"):
        remote.get(CID)


class _Blob(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "10")
        self.end_headers()
        self.wfile.write(b"checkpoint")

    do_HEAD = do_GET

    def log_message(self, *args: object) -> None:
        pass


def test_an_honest_store_under_a_path_prefix_still_serves() -> None:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Blob)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        remote = store.HttpStore(f"http://127.0.0.1:{srv.server_address[1]}/local/")
        assert remote.get(CID) == b"checkpoint"
        assert remote.has(CID)
    finally:
        srv.shutdown()
        srv.server_close()
