"""Content store: atomic writes, verify-on-read, corruption refused with the blob named."""

from __future__ import annotations

import asyncio
import http.server
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from pot import cids, errors, store, storeserving


def test_put_get_roundtrip(tmp_path: Path) -> None:
    s = store.FilesystemStore(tmp_path)
    cid = s.put(b"weights")
    assert cid == cids.cid_of(b"weights")
    assert s.get(cid) == b"weights"
    assert s.has(cid)
    assert s.put(b"weights") == cid  # idempotent


def test_missing_blob_is_named(tmp_path: Path) -> None:
    s = store.FilesystemStore(tmp_path)
    cid = cids.cid_of(b"never stored")
    with pytest.raises(errors.BlobNotFound, match=cid):
        s.get(cid)
    assert not s.has(cid)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda b: b[:-1],  # truncated
        lambda b: b + b"x",  # extended
        lambda b: bytes([b[0] ^ 1]) + b[1:],  # one bit flipped
        lambda b: b"",  # emptied
    ],
    ids=["truncated", "extended", "bitflip", "emptied"],
)
def test_corrupt_blob_refused(tmp_path: Path, tamper) -> None:  # type: ignore[no-untyped-def]
    s = store.FilesystemStore(tmp_path)
    cid = s.put(b"checkpoint bytes " * 100)
    path = s.path(cid)
    path.write_bytes(tamper(path.read_bytes()))
    with pytest.raises(errors.BlobCorrupt, match=f"blob {cid}.*corrupt"):
        s.get(cid)


def test_put_repairs_corrupt_copy(tmp_path: Path) -> None:
    s = store.FilesystemStore(tmp_path)
    cid = s.put(b"data")
    s.path(cid).write_bytes(b"junk")
    assert s.put(b"data") == cid
    assert s.get(cid) == b"data"


def test_no_temporary_files_left(tmp_path: Path) -> None:
    s = store.FilesystemStore(tmp_path)
    for i in range(20):
        s.put(os.urandom(100) + bytes([i]))
    leftovers = [p for p in tmp_path.rglob(".tmp-*")]
    assert leftovers == []


def test_path_rejects_non_cid(tmp_path: Path) -> None:
    s = store.FilesystemStore(tmp_path)
    with pytest.raises(errors.ProofError):
        s.path("../../etc/passwd")


def test_concurrent_writers_same_blob(tmp_path: Path) -> None:
    s = store.FilesystemStore(tmp_path)
    data = os.urandom(1 << 16)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(s.put(data))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(results) == {cids.cid_of(data)}
    assert s.get(results[0]) == data


@pytest.fixture
def served_store(tmp_path: Path) -> Iterator[tuple[store.FilesystemStore, str]]:
    """A filesystem store served over HTTP on a loopback port (real aiohttp server)."""
    backing = store.FilesystemStore(tmp_path / "served")
    loop = asyncio.new_event_loop()
    app = web.Application()
    storeserving.add_routes(app, backing)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield backing, f"http://127.0.0.1:{port}"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.run_until_complete(runner.cleanup())
    loop.close()


def test_http_store_verifies(
    served_store: tuple[store.FilesystemStore, str], tmp_path: Path
) -> None:
    backing, url = served_store
    cid = backing.put(b"remote checkpoint")
    remote = store.HttpStore(url)
    assert remote.get(cid) == b"remote checkpoint"
    assert remote.has(cid)
    missing = cids.cid_of(b"absent")
    with pytest.raises(errors.BlobNotFound):
        remote.get(missing)
    # A corrupt copy on the serving side is refused by the server and the client.
    backing.path(cid).write_bytes(b"tampered")
    with pytest.raises(errors.StoreError):
        remote.get(cid)
    # Layered: local cache in front of the remote; a fetched blob is cached.
    backing.path(cid).write_bytes(b"remote checkpoint")
    cache = store.FilesystemStore(tmp_path / "cache")
    layered = store.LayeredStore(cache, remote)
    assert layered.get(cid) == b"remote checkpoint"
    assert cache.has(cid)


def test_http_store_unreachable() -> None:
    remote = store.HttpStore("http://127.0.0.1:9", timeout=2)
    with pytest.raises(errors.StoreError, match="unreachable"):
        remote.get(cids.cid_of(b"x"))


class _Hostile(http.server.BaseHTTPRequestHandler):
    """A peer that claims a huge blob, or drips one byte at a time."""

    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        self.send_response(200)
        if self.path.endswith("/huge"):
            self.send_header("Content-Length", str(1 << 42))
            self.end_headers()
            self.wfile.write(b"x" * 10)
            return
        self.end_headers()
        try:
            for _ in range(200):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.02)
        except OSError:
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hostile() -> Iterator[store.HttpStore]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield store.HttpStore(f"http://127.0.0.1:{srv.server_address[1]}", max_bytes=1000, deadline=0.5)
    srv.shutdown()
    srv.server_close()


def test_http_store_refuses_oversized_blob(
    hostile: store.HttpStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hostile, "_url", lambda cid: f"{hostile.base_url}/huge")
    with pytest.raises(errors.StoreError, match="more than 1000"):
        hostile.get(cids.cid_of(b"x"))


def test_http_store_gives_up_on_a_drip(hostile: store.HttpStore) -> None:
    began = time.monotonic()
    with pytest.raises(errors.StoreError, match=r"not read in 0\.5 s"):
        hostile.get(cids.cid_of(b"x"))
    assert time.monotonic() - began < 2
