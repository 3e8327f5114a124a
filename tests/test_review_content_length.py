"""A Content-Length that is not ASCII digits is ignored, not a ValueError.

HTTP headers are read as Latin-1, so a server can send ``Content-Length: ²`` (byte 0xB2):
``str.isdigit`` is True for it and ``int`` raises ValueError. ``HttpStore`` (the validators
read a miner's checkpoints through it, from the miner's own store) and the trainer's dataset
download let that ValueError out instead of a ``StoreError``. An audit that raises is the
validator's fault (``AUDIT_ERROR``: the segment is unpaid but its miner not slashed), so a
cheating miner's store could turn a slash into no slash with one header. Real HTTP server on
127.0.0.1.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest

from pot import cids, store
from pot.trainer import downloading

BODY = b"a checkpoint, say"


class _Superscript(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # the body ends where the connection does

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "²")  # sent as the Latin-1 byte 0xB2
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def base_url() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Superscript)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_the_store_reads_past_a_non_ascii_content_length(base_url: str) -> None:
    assert store.HttpStore(base_url, deadline=5).get(cids.cid_of(BODY)) == BODY


def test_the_dataset_download_reads_past_a_non_ascii_content_length(base_url: str) -> None:
    got = downloading._download(f"{base_url}/data.csv", attempts=1, backoff_s=0, timeout_s=5)
    assert got == BODY
