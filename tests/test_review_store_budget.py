"""A replica's audits share one memory budget for their fetches; it delays, never refuses.

Each ``HttpStore`` read could hold twice its cap (buffer and copy), times ``maxConcurrent``
audits. ``store.Budget`` makes a read reserve that before connecting and wait while others
hold the rest; a read larger than the whole budget waits to run alone. It is local to a
replica, so it must never change a verdict: every read still succeeds. Real HTTP server on
127.0.0.1 that counts the reads in flight.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from pot import cids, errors, store

BLOB = b"c" * 1000
CID = cids.cid_of(BLOB)


class _Counting(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Slow)
        self.lock = threading.Lock()
        self.now = self.most = 0
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _Slow(http.server.BaseHTTPRequestHandler):
    """Serves ``BLOB`` after 0.2 s, counting the requests it is answering at once."""

    protocol_version = "HTTP/1.0"
    server: _Counting

    def do_GET(self) -> None:
        srv = self.server
        with srv.lock:
            srv.now += 1
            srv.most = max(srv.most, srv.now)
        time.sleep(0.2)
        with srv.lock:
            srv.now -= 1
        self.send_response(200)
        self.send_header("Content-Length", str(len(BLOB)))
        self.end_headers()
        self.wfile.write(BLOB)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def counting() -> Iterator[_Counting]:
    srv = _Counting()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _fetch_all(url: str, budget: store.Budget, readers: int) -> list[bytes]:
    got: list[bytes] = []

    def read() -> None:
        got.append(store.HttpStore(url, max_bytes=len(BLOB), budget=budget).get(CID))

    threads = [threading.Thread(target=read) for _ in range(readers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return got


@pytest.mark.parametrize(("total", "most"), [(4 * len(BLOB), 2), (100, 1)])
def test_concurrent_reads_stay_within_the_budget(
    counting: _Counting, total: int, most: int
) -> None:
    """Room for two reads (each holds 2 × its cap): never more than two at once; a budget
    smaller than one read runs them one at a time. Every read succeeds either way."""
    budget = store.Budget(total)
    assert _fetch_all(counting.url, budget, 5) == [BLOB] * 5
    assert counting.most == most
    assert budget.held == 0


def test_without_a_budget_reads_run_at_once(counting: _Counting) -> None:
    got: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: got.append(store.HttpStore(counting.url).get(CID)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert got == [BLOB] * 3 and counting.most == 3


def test_a_failed_read_gives_its_room_back() -> None:
    budget = store.Budget(1 << 20)
    with pytest.raises(errors.StoreError, match="unreachable"):
        store.HttpStore("http://127.0.0.1:9", timeout=2, budget=budget).get(CID)
    assert budget.held == 0


def test_a_budget_needs_a_byte() -> None:
    with pytest.raises(ValueError, match="at least 1 byte"):
        store.Budget(0)


def test_the_daemon_reads_its_budget_as_a_quantity() -> None:
    from pot.validator import __main__ as daemon

    required = ["--config", "c", "--replica-id", "0", "--key-file", "k", "--data-dir", "d"]
    args = daemon._parser().parse_args(required)
    assert args.audit_memory == "auto"
    assert daemon._memory("512Mi") == 512 << 20
    for bad in ("lots", "0"):
        with pytest.raises(errors.ConfigError, match="--audit-memory"):
            daemon._memory(bad)


def test_the_auto_budget_is_half_the_containers_memory_limit(tmp_path: Path) -> None:
    from pot.validator import __main__ as daemon

    v2, v1 = tmp_path / "memory.max", tmp_path / "memory.limit_in_bytes"
    assert daemon._memory("auto", (v2, v1)) == 8 << 30  # neither file: no container limit
    v1.write_text("2147483648\n")
    assert daemon._memory("auto", (v2, v1)) == 1 << 30
    v1.write_text("9223372036854771712\n")  # v1's "unlimited"
    assert daemon._memory("auto", (v2, v1)) == 8 << 30
    v2.write_text("max\n")
    assert daemon._memory("auto", (v2, v1)) == 8 << 30  # v2 first: unlimited there
    v2.write_text("536870912\n")
    assert daemon._memory("auto", (v2, v1)) == 256 << 20
    assert daemon._memory("3Gi", (v2, v1)) == 3 << 30  # an explicit budget is taken as is


class _Understating(http.server.BaseHTTPRequestHandler):
    """A chunked body with a small Content-Length beside it (which http.client ignores), and
    notes what the reader's budget holds while the body is on its way."""

    protocol_version = "HTTP/1.1"
    budget: store.Budget
    seen: ClassVar[list[int]] = []

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Content-Length", "10")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.flush()
        time.sleep(0.3)  # the reader has the headers now
        self.seen.append(self.budget.held)
        for i in range(0, len(BLOB), 100):
            part = BLOB[i : i + 100]
            self.wfile.write(b"%x\r\n" % len(part) + part + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, *args: object) -> None:
        pass


def test_a_chunked_body_holds_its_room_whatever_its_content_length_says() -> None:
    """http.client reads a chunked body to its end, past any Content-Length: a read must not
    give its room back on a size that does not bound it (it held 2 × 10 bytes for a body of
    up to its cap, so a peer could make the budget's reads hold far more than the budget)."""
    budget = store.Budget(1 << 20)
    _Understating.budget, _Understating.seen = budget, []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Understating)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        got = store.HttpStore(url, max_bytes=4 * len(BLOB), budget=budget).get(CID)
    finally:
        srv.shutdown()
        srv.server_close()
    assert got == BLOB
    assert _Understating.seen == [2 * 4 * len(BLOB)]
    assert budget.held == 0


def test_a_large_reservation_is_not_starved_by_smaller_ones_after_it() -> None:
    """Room goes in turn: a read that needs the whole budget, waiting while others hold part
    of it, is not passed by smaller reads that arrive after it (a stream of them kept it
    waiting for ever)."""
    budget = store.Budget(100)
    order: list[str] = []

    def take(name: str, nbytes: int) -> None:
        with budget.reserve(nbytes):
            order.append(name)

    with budget.reserve(60):
        big = threading.Thread(target=take, args=("big", 100))
        big.start()
        time.sleep(0.2)  # waiting for the 60 held
        small = threading.Thread(target=take, args=("small", 30))
        small.start()
        time.sleep(0.2)
        assert order == []  # 60 + 30 fits, but the big one came first
    big.join(5)
    small.join(5)
    assert order == ["big", "small"]
    assert budget.held == 0
