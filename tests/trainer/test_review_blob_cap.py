"""A checkpoint larger than the task's model allows is refused (``OVERSIZED_BLOB``) before
the validator holds it.

Every fetch could be 4 GiB (``store.MAX_BLOB``), twice that while it was copied, times
``maxConcurrent`` audits: a miner whose store served a 4 GiB "checkpoint" could OOM-kill
every auditing replica at once. The cap now comes from the task's registered spec (its
initial checkpoint, ``checkpoints.size_cap``), the same on every replica, so the verdict is
too; the read stops at the cap. Real parts: the daemon's ``ReplayAuditor``, ``HttpStore``
and a hostile HTTP store on loopback that counts the bytes it got to send.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pot import cids, errors, store
from pot.trainer import checkpoints, models, tasks, verification
from pot.validator import auditing

from .conftest import TASK, UID
from .test_review_store_audit import _audit, _first_segment, _spec

BLOAT = 128 << 20
"""What the hostile store would send of a bloated blob: far past any cap in these tests."""
BOUND = 32 << 20
"""Most bytes it may get to send before the reader hangs up (socket buffers included)."""


class _Bloating(http.server.ThreadingHTTPServer):
    """A miner's store: its blobs, except ``bloated``, for which it streams ``BLOAT`` bytes
    (with that ``Content-Length`` if ``declare``, else until the connection ends)."""

    daemon_threads = True

    def __init__(self, blobs: store.FilesystemStore) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.blobs, self.bloated, self.declare = blobs, "", True
        self.asked: list[str] = []
        self.sent = 0
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server: _Bloating

    def do_GET(self) -> None:
        srv, cid = self.server, self.path.rsplit("/", 1)[-1]
        srv.asked.append(cid)
        if cid != srv.bloated:
            try:
                data = srv.blobs.get(cid)
            except errors.StoreError:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(200)
        if srv.declare:
            self.send_header("Content-Length", str(BLOAT))
        self.end_headers()
        chunk = bytes(1 << 16)
        try:
            while srv.sent < BLOAT:
                self.wfile.write(chunk)
                srv.sent += len(chunk)
        except OSError:  # the reader hung up
            pass

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def bloating(tmp_path: Path) -> Iterator[_Bloating]:
    srv = _Bloating(store.FilesystemStore(tmp_path / "miner"))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("declare", [True, False], ids=["declared", "undeclared"])
def test_the_store_stops_reading_at_the_callers_cap(bloating: _Bloating, declare: bool) -> None:
    bloating.bloated, bloating.declare = cids.cid_of(b"whatever"), declare
    with pytest.raises(errors.BlobTooLarge, match="more than 1048576"):
        store.HttpStore(bloating.url, deadline=20).get(bloating.bloated, max_bytes=1 << 20)
    assert bloating.sent < BOUND
    small = bloating.blobs.put(b"a small checkpoint")
    assert store.HttpStore(bloating.url).get(small, max_bytes=1 << 20) == b"a small checkpoint"


def test_a_cached_copy_over_the_cap_is_refused_unread(tmp_path: Path) -> None:
    """The cap is the blob's, not the source's: a copy in the validator's cache is held to
    it too (a verdict must not depend on what a replica happens to have cached)."""
    cache = store.FilesystemStore(tmp_path / "cache")
    cid = cache.put(b"x" * 100)
    with pytest.raises(errors.BlobTooLarge, match="100 bytes, more than 99"):
        cache.get(cid, max_bytes=99)
    assert cache.get(cid, max_bytes=100) == b"x" * 100


@pytest.mark.parametrize("declare", [True, False], ids=["declared", "undeclared"])
def test_an_oversized_start_checkpoint_is_refused_with_its_name(
    tmp_path: Path, bloating: _Bloating, declare: bool
) -> None:
    seg = _first_segment(bloating.blobs, bloating.url)
    bloating.bloated, bloating.declare = seg.start_cid, declare
    assert _audit(tmp_path / "cache", seg) == (False, "OVERSIZED_BLOB")
    assert seg.start_cid in bloating.asked and bloating.sent < BOUND


def test_an_honest_audit_through_the_same_store_passes(tmp_path: Path, bloating: _Bloating) -> None:
    seg = _first_segment(bloating.blobs, bloating.url)
    assert _audit(tmp_path / "cache", seg) == (True, "")
    assert bloating.sent == 0


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_the_cap_holds_every_honest_checkpoint(optimizer: str) -> None:
    """A trained checkpoint (optimizer state included) under each optimizer fits the cap
    its initial checkpoint sets."""
    raw = _spec()
    raw["hyperparameters"]["optimizer"] = optimizer
    spec = tasks.from_spec(raw, uid=UID)
    built = models.build(spec)
    initial = verification._initial(built, spec)
    opt = checkpoints.make_optimizer(spec, built.model.parameters())
    for p in built.model.parameters():
        p.grad = p.detach().clone()
    opt.step()
    trained = checkpoints.encode(
        checkpoints.capture(built.model, opt, step=10**9, optimizer_steps=10**9, seed=2**62)
    )
    assert len(trained) <= checkpoints.size_cap(initial) - checkpoints.CAP_SLACK  # no slack


def test_an_audit_memory_budget_below_a_checkpoint_only_delays(
    tmp_path: Path, bloating: _Bloating
) -> None:
    """A replica's budget is local: one smaller than the task's checkpoints still audits
    (each fetch waits to run alone), with the verdict every other replica reaches."""
    seg = _first_segment(bloating.blobs, bloating.url)
    auditor = auditing.ReplayAuditor(tmp_path / "cache", memory=1)
    assert auditor.audit(TASK, _spec(), UID, seg.record()) == (True, "")
    assert auditor.budget.held == 0
