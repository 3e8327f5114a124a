"""``spec.dataset.url``: a trainer fetches its dataset blob once, checked against the CID.

A pod's content store starts empty (node-local, keyed by the task's uid), so a
task that brings its own data (``spec.dataset.cid``) needs a way to get the
bytes there. With ``url`` set, a trainer whose store lacks the blob downloads
it over HTTP(S), keeps it only if the bytes hash to ``spec.dataset.cid``, and
from then on serves it to the validators like any other blob. Ranks on one node
share the store, so whichever finishes first stores it and the others' writes
are no-ops (``FilesystemStore.put`` is atomic and content-addressed).

Transient failures (connection errors, timeouts, 5xx, 429) are retried with
backoff; anything else, or a blob over ``MAX_BYTES``, is one error naming
``spec.dataset.url``.
"""

from __future__ import annotations

import http.client
import logging
import time
import urllib.error
import urllib.request

from pot import cids, errors, store
from pot.trainer import tasks

log = logging.getLogger(__name__)

MAX_BYTES = 2 << 30
"""Largest dataset fetched (the trainer holds it in memory, like every blob)."""
ATTEMPTS = 4
TIMEOUT_S = 60.0


def fetch_dataset(
    spec: tasks.TaskSpec,
    blobs: store.FilesystemStore,
    *,
    attempts: int = ATTEMPTS,
    backoff_s: float = 1.0,
    timeout_s: float = TIMEOUT_S,
) -> bool:
    """Put the ``spec.dataset.url`` blob into ``blobs`` unless it is there; True if fetched."""
    cid, url = spec.dataset_cid, spec.dataset_url
    if cid is None or url is None or blobs.has(cid):
        return False
    data = _download(url, attempts=attempts, backoff_s=backoff_s, timeout_s=timeout_s)
    got = cids.cid_of(data)
    if got != cid:
        raise errors.BlobCorrupt(
            f"spec.dataset.url: {url} served {len(data)} bytes with CID {got}, "
            f"not spec.dataset.cid {cid}"
        )
    blobs.put(data)
    log.info("dataset %s: %d bytes fetched from %s", cid, len(data), url)
    return True


def _download(url: str, *, attempts: int, backoff_s: float, timeout_s: float) -> bytes:
    delay = backoff_s
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 (http/https only: tasks.TaskSpec)
                header = resp.headers.get("Content-Length") or ""
                size = int(header) if header.isascii() and header.isdigit() else None  # "²"
                if size is not None and size > MAX_BYTES:
                    raise errors.StoreError(_too_big(url))
                data: bytes = resp.read(MAX_BYTES + 1)
                if size is not None and len(data) < size:
                    raise http.client.IncompleteRead(data, size - len(data))  # retried
            if len(data) > MAX_BYTES:
                raise errors.StoreError(_too_big(url))
            return data
        except urllib.error.HTTPError as exc:
            if (exc.code < 500 and exc.code != 429) or attempt == attempts:
                raise errors.BlobNotFound(
                    f"spec.dataset.url: {url} answered HTTP {exc.code} {exc.reason}"
                ) from None
            why = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            # refused, reset, timed out, DNS, a body cut short
            reason = getattr(exc, "reason", exc)
            if attempt == attempts:
                raise errors.StoreError(
                    f"spec.dataset.url: {url} unreachable after {attempts} attempts ({reason})"
                ) from None
            why = str(reason)
        log.warning("dataset %s: attempt %d failed (%s); again in %.1f s", url, attempt, why, delay)
        time.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")  # the loop returns or raises


def _too_big(url: str) -> str:
    return f"spec.dataset.url: {url} is over {MAX_BYTES >> 30} GiB, the largest dataset fetched"
