"""The replica's disk: stable checkpoint, committed batches after it, the view.

What PBFT needs to survive a crash (TOCS §5.3, §6 on recovery): the last
stable checkpoint (so the replica restarts from a state 2f+1 replicas vouched
for) and the batches it committed since (replayed on restart; anything newer
comes by retransmission or state transfer). The view it was in is kept so
that a restarted replica stays *muted* in views where it may have voted
(``pbft`` module docstring).

Layout under ``--data-dir``: ``pbft/stable.json`` + ``pbft/stable.snap``
(written atomically: temporary file, fsync, rename), ``pbft/log`` (one
committed batch per line, appended, flushed every loop turn, truncated when a
checkpoint becomes stable) and ``pbft/view``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import IO

from pot import files
from pot.validator import messages as m
from pot.validator import pbft

log = logging.getLogger(__name__)


class Disk:
    """Applies the core's persistence actions; loads a ``pbft.Durable`` on start."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.dir = Path(root) / "pbft"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = (self.dir / "log").open("ab")
        self.view = self._read_view()

    def _read_view(self) -> int:
        try:
            return int((self.dir / "view").read_text())
        except (FileNotFoundError, ValueError):
            return 0

    def load(self) -> pbft.Durable | None:
        """What the last run left, or None for a fresh replica."""
        meta_path = self.dir / "stable.json"
        seq, digest, snap = 0, b"", b""
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            snap = (self.dir / "stable.snap").read_bytes()
            seq, digest = int(meta["seq"]), bytes.fromhex(meta["digest"])
            if m.sha256(snap) != digest:
                log.error("stable snapshot does not match its digest; starting from scratch")
                seq, digest, snap = 0, b"", b""
        entries: list[tuple[int, int, m.Batch]] = []
        with (self.dir / "log").open("rb") as fh:
            for line in fh:
                msg = m.decode(line.strip())
                if not isinstance(msg, m.PrePrepare):
                    break  # a torn last line after a crash
                if msg.seq > seq:
                    entries.append(
                        (msg.seq, msg.view, m.Batch(nonce=msg.nonce, requests=msg.batch))
                    )
        if seq == 0 and not entries and self.view == 0:
            return None
        return pbft.Durable(
            view=self.view, seq=seq, digest=digest, snapshot=snap, log=tuple(entries)
        )

    def apply(self, action: pbft.Action) -> None:
        if isinstance(action, pbft.Committed):
            pp = m.PrePrepare(
                view=action.view,
                seq=action.seq,
                digest=action.digest,
                nonce=action.batch.nonce,
                batch=action.batch.requests,
                replica=0,
            )
            self._log.write(m.encode(pp) + b"\n")
        elif isinstance(action, pbft.Stable):
            self._log.flush()
            files.write_atomic(self.dir / "stable.snap", action.snapshot)
            files.write_atomic(
                self.dir / "stable.json",
                json.dumps({"seq": action.seq, "digest": action.digest.hex()}).encode(),
            )
            self._truncate(action.seq)
        elif isinstance(action, pbft.ViewEntered) and action.view > self.view:
            self.view = action.view
            files.write_atomic(self.dir / "view", str(action.view).encode())

    def _truncate(self, seq: int) -> None:
        self._log.close()
        keep = []
        with (self.dir / "log").open("rb") as fh:
            for line in fh:
                msg = m.decode(line.strip())
                if isinstance(msg, m.PrePrepare) and msg.seq > seq:
                    keep.append(line)
        files.write_atomic(self.dir / "log", b"".join(keep))
        self._log = (self.dir / "log").open("ab")

    def flush(self) -> None:
        self._log.flush()

    def close(self) -> None:
        self._log.close()
