"""Getting signed segments to the validators without losing one.

A segment is written to an on-disk outbox (atomic rename) before anyone is
told about it, and leaves the outbox only when a validator acknowledged it
(``202``) or refused it for good (``400``, with a ``Rejection`` name, kept
under ``rejected/`` for the operator to inspect). Network errors and 5xx are
retried with capped exponential backoff and jitter, so validators may be down
for as long as they like: the queue waits, and a restarted trainer resends
whatever its outbox holds. Validators treat a resubmission of the same
segment as idempotent (docs/protocol.md).

With ``--segments-dir`` delivery is a file per segment instead of an HTTP
POST (tests, demos, air-gapped audits). Delivery never overwrites a different
body under the same index: that would be the duplicate a resume must not make.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram

from pot import errors, files
from pot.trainer import segments

log = logging.getLogger("pot.trainer.publishing")

QUEUE_DEPTH = Gauge("pot_trainer_queue_depth", "Segments waiting for a validator to acknowledge.")
PUBLISH_SECONDS = Histogram(
    "pot_trainer_segment_publish_seconds",
    "From a segment's commit to its acknowledgement.",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120, 600),
)
PUBLISHED = Counter("pot_trainer_segments_total", "Segments by outcome.", ["outcome"])


class Publisher:
    """An outbox under ``state_dir`` drained by one background thread."""

    def __init__(
        self,
        state_dir: Path,
        *,
        validator_url: str | None = None,
        segments_dir: Path | None = None,
        timeout: float = 10.0,
        max_backoff: float = 30.0,
        initial_backoff: float = 0.25,
    ) -> None:
        if (validator_url is None) == (segments_dir is None):
            raise ValueError("publisher: exactly one of validator_url and segments_dir")
        self.outbox = state_dir / "outbox"
        self.sent = state_dir / "sent"
        self.rejected = state_dir / "rejected"
        for d in (self.outbox, self.sent, self.rejected):
            d.mkdir(parents=True, exist_ok=True)
        self.validator_url = validator_url.rstrip("/") if validator_url else None
        self.segments_dir = segments_dir
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.initial_backoff = initial_backoff
        self._wake = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="pot-publisher", daemon=True)
        self._enqueued_at: dict[str, float] = {}
        self.duplicates = 0
        self._give_up_at = 0.0

    @staticmethod
    def _name(seg: segments.Segment) -> str:
        return f"{seg.index:08d}.json"

    def start(self) -> None:
        """Start draining (resends whatever a previous run left in the outbox)."""
        self._thread.start()

    def known(self, index: int) -> bool:
        """True if segment ``index`` is queued, sent or rejected already."""
        name = f"{index:08d}.json"
        return any((d / name).exists() for d in (self.outbox, self.sent, self.rejected))

    def enqueue(self, seg: segments.Segment) -> None:
        """Persist ``seg`` in the outbox (durable on return) and wake the sender."""
        name = self._name(seg)
        if (self.sent / name).exists() or (self.rejected / name).exists():
            return
        files.write_atomic(self.outbox / name, segments.to_json(seg))
        with self._wake:
            self._enqueued_at[name] = time.monotonic()
            QUEUE_DEPTH.set(len(self._pending()))
            self._wake.notify_all()

    def _pending(self) -> list[Path]:
        return sorted(p for p in self.outbox.glob("*.json"))

    def depth(self) -> int:
        """Segments not yet acknowledged."""
        return len(self._pending())

    def _deliver(self, path: Path) -> str:
        """'ok', 'rejected:<reason>' or 'retry:<why>'."""
        body = path.read_bytes()
        if self.segments_dir is not None:
            seg = segments.parse(body)
            dest = self.segments_dir / f"segment-{seg.node_rank}-{seg.index:06d}.json"
            if dest.exists() and dest.read_bytes() != body:
                self.duplicates += 1
                return "rejected:DUPLICATE_INDEX"
            files.write_atomic(dest, body)
            return "ok"
        req = urllib.request.Request(  # noqa: S310 (operator-given http(s) URL)
            f"{self.validator_url}/v1/segments",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                answer = resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 400:
                try:
                    reason = str(json.loads(exc.read()).get("reason", "unknown"))
                except (ValueError, AttributeError):
                    reason = "unknown"
                return f"rejected:{reason}"
            return f"retry:HTTP {exc.code}"
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            # HTTPException: a validator killed mid-answer (IncompleteRead), or something
            # else on its port (BadStatusLine); escaping, it ended the publisher's thread
            return f"retry:{exc}"
        # A 202 that is not yet committed is sent again (validators order it once): the
        # replica that took it may never get it ordered (docs/protocol.md, POST /v1/segments).
        try:
            committed = json.loads(answer).get("committed", True) is not False
        except (ValueError, AttributeError):
            committed = True
        return "ok" if committed else "retry:not yet committed"

    def _run(self) -> None:
        backoff = self.initial_backoff
        while True:
            with self._wake:
                while not self._pending() and not self._stop:
                    self._wake.wait(timeout=1.0)
                if self._stop and not self._pending():
                    return
            path = self._pending()[0]
            try:
                outcome = self._deliver(path)
            except (OSError, segments.Rejected, errors.PotError) as exc:
                outcome = f"retry:{exc}"
            if outcome == "ok" or outcome.startswith("rejected:"):
                target = self.sent if outcome == "ok" else self.rejected
                os.replace(path, target / path.name)
                began = self._enqueued_at.pop(path.name, None)
                if began is not None:
                    PUBLISH_SECONDS.observe(time.monotonic() - began)
                PUBLISHED.labels("acknowledged" if outcome == "ok" else "rejected").inc()
                if outcome != "ok":
                    log.error("segment %s refused: %s", path.name, outcome.split(":", 1)[1])
                QUEUE_DEPTH.set(len(self._pending()))
                backoff = self.initial_backoff
                continue
            PUBLISHED.labels("retried").inc()
            log.warning(
                "segment %s not delivered (%s); retry in %.1fs", path.name, outcome, backoff
            )
            with self._wake:
                if self._stop and self._give_up_at <= time.monotonic():
                    return
                self._wake.wait(timeout=backoff * (0.5 + random.random()))  # noqa: S311
            backoff = min(backoff * 2, self.max_backoff)

    def close(self, timeout: float = 30.0) -> int:
        """Try for ``timeout`` seconds to drain; return segments left (kept on disk)."""
        with self._wake:
            self._stop = True
            self._give_up_at = time.monotonic() + timeout
            self._wake.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout + 1)
        return self.depth()


def decided(view: object, miner: str, expected: int) -> bool:
    """Whether a task view (``GET /v1/tasks/{ns}/{name}``) has decided ``miner``'s segments:
    the allocation is in, or ``expected`` of its segments are verified or rejected."""
    if not isinstance(view, dict):
        return False
    if view.get("phase") == "Allocated":
        return True
    miners = view.get("miners")
    if not isinstance(miners, dict):
        return False
    for address, work in miners.items():
        if str(address).lower() == miner.lower() and isinstance(work, dict):
            done = work.get("verified", 0) + work.get("rejected", 0)
            return isinstance(done, int) and done >= expected
    return False


def wait_decided(
    validator_url: str,
    task: str,
    miner: str,
    *,
    expected: int,
    timeout: float,
    poll: float = 0.5,
) -> bool:
    """Poll the validators until ``miner``'s segments are decided (True) or ``timeout``.

    Validators replay segments after acknowledging them, fetching the checkpoints
    from this node's ``storeUrl``; a trainer that stopped serving as soon as its
    last segment was acknowledged made every audit fail with MISSING_BLOB (found by
    tests/integration/test_train_to_allocation.py). So the node keeps its store up
    until its own segments are decided.
    """
    url = f"{validator_url.rstrip('/')}/v1/tasks/{task}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (operator-given URL)
                view = json.loads(resp.read())
            if decided(view, miner, expected):
                return True
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            log.debug("waiting for verdicts: %s", exc)
        if time.monotonic() + poll > deadline:
            return False
        time.sleep(poll)
