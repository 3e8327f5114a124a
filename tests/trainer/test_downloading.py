"""``spec.dataset.url``: a trainer with an empty store fetches its dataset once, keeps it only if
it hashes to ``spec.dataset.cid``, retries what is transient and names the URL in every error.
Served by a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pot import cids, errors, store
from pot.trainer import downloading, segments, tasks, verification

from .conftest import TASK, UID, free_port, train_local

CSV = b"".join(b"%d.0,%d.5,%d.25\n" % (i, i % 7, i % 5) for i in range(400))
CID = cids.cid_of(CSV)


class _Server(http.server.ThreadingHTTPServer):
    """Serves ``routes`` (path → list of (status, body), one per request, the last repeated)."""

    routes: dict[str, list[tuple[int, bytes]]]
    hits: dict[str, int]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        answers = self.server.routes.get(self.path, [(404, b"no such file")])
        n = self.server.hits.get(self.path, 0)
        self.server.hits[self.path] = n + 1
        status, body = answers[min(n, len(answers) - 1)]
        self.send_response(status)
        cut = body == b"<cut>"  # a transfer that dies halfway: half the promised bytes
        self.send_header("Content-Length", str(len(CSV) if cut else len(body)))
        self.end_headers()
        self.wfile.write(CSV[: len(CSV) // 2] if cut else body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.routes, srv.hits = {}, {}
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


def _url(srv: _Server, path: str) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}{path}"


def _spec(url: str, cid: str = CID) -> dict[str, Any]:
    return {
        "model": {"name": "mlp-regression", "config": {"hidden": 16}},
        "dataset": {"cid": cid, "url": url},
        "hyperparameters": {"lr": 0.01, "batchSize": 8, "steps": 20, "seed": 3},
        "resources": {"nodes": 1},
        "proof": {"segmentSteps": 10},
    }


@pytest.mark.usefixtures("local_env")
def test_a_trainer_with_an_empty_store_fetches_the_dataset_and_its_segments_verify(
    tmp_path: Path, server: _Server
) -> None:
    server.routes["/train.csv"] = [(200, CSV)]
    run = train_local(tmp_path, _spec(_url(server, "/train.csv")))
    assert server.hits["/train.csv"] == 1
    blobs = store.FilesystemStore(run.store)
    assert blobs.get(CID) == CSV  # kept, and served to validators from here on
    policy = verification.Policy(task=TASK, spec=tasks.from_spec(_spec("http://unused/"), uid=UID))
    verification.clear_caches()
    verdicts = [
        verification.verify_segment(segments.parse(p.read_bytes()), blobs, policy)
        for p in run.segment_files()
    ]
    assert len(verdicts) == 2 and all(v.valid for v in verdicts), [v.line() for v in verdicts]


def test_a_blob_already_in_the_store_is_not_fetched(tmp_path: Path, server: _Server) -> None:
    blobs = store.FilesystemStore(tmp_path)
    blobs.put(CSV)
    spec = tasks.from_spec(_spec(_url(server, "/train.csv")))
    assert downloading.fetch_dataset(spec, blobs) is False
    assert server.hits == {}


def test_transient_failures_are_retried(tmp_path: Path, server: _Server) -> None:
    server.routes["/flaky.csv"] = [(503, b"busy"), (429, b"slow down"), (200, b"<cut>"), (200, CSV)]
    spec = tasks.from_spec(_spec(_url(server, "/flaky.csv")))
    blobs = store.FilesystemStore(tmp_path)
    assert downloading.fetch_dataset(spec, blobs, backoff_s=0.01)
    assert server.hits["/flaky.csv"] == 4 and blobs.get(CID) == CSV


@pytest.mark.parametrize(
    ("answers", "error", "message", "hits"),
    [
        ([(200, CSV + b"1,2,3\n")], errors.BlobCorrupt, "not spec.dataset.cid", 1),
        ([(404, b"gone")], errors.BlobNotFound, "answered HTTP 404", 1),  # not retried
        ([(500, b"down")], errors.BlobNotFound, "answered HTTP 500", 3),  # retried, then given up
    ],
    ids=["other-bytes", "not-found", "server-error"],
)
def test_failures_name_the_url_and_store_nothing(
    tmp_path: Path,
    server: _Server,
    answers: list[tuple[int, bytes]],
    error: type[errors.PotError],
    message: str,
    hits: int,
) -> None:
    server.routes["/d.csv"] = answers
    url = _url(server, "/d.csv")
    blobs = store.FilesystemStore(tmp_path)
    with pytest.raises(error, match=rf"^spec\.dataset\.url: {url} .*{message}"):
        downloading.fetch_dataset(tasks.from_spec(_spec(url)), blobs, attempts=3, backoff_s=0.01)
    assert server.hits["/d.csv"] == hits and not blobs.has(CID)


def test_an_unreachable_url_is_retried_then_named(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/d.csv"  # nothing listens there
    with pytest.raises(errors.StoreError, match=rf"^spec\.dataset\.url: {url} unreachable"):
        downloading.fetch_dataset(
            tasks.from_spec(_spec(url)),
            store.FilesystemStore(tmp_path),
            attempts=2,
            backoff_s=0.01,
            timeout_s=2,
        )


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ({"name": "synthetic-regression", "url": "https://x/y"}, "needs spec.dataset.cid"),
        ({"cid": CID, "url": "file:///etc/passwd"}, "must be an http:// or https:// URL"),
        ({"cid": CID, "url": 7}, "must be an http:// or https:// URL"),
    ],
)
def test_the_spec_names_a_bad_url(dataset: dict[str, Any], message: str) -> None:
    spec = {**_spec("http://unused/"), "dataset": dataset}
    with pytest.raises(errors.ConfigError, match=rf"^spec\.dataset\.url: {message}"):
        tasks.from_spec(spec)
