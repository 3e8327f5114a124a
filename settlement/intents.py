"""The sidecar's persisted intent log: what it is about to send, written before it sends.

Issue 7: a sidecar killed between broadcast and receipt must, on restart, rebroadcast the
*same* signed transaction (same nonce, same hash) rather than build a new one, or a crash
could produce two settle transactions (the second reverting, but still paid for) or, worse,
lose track of a nonce. So every signed attempt is written here, fsynced, before it leaves
the process. One JSON file per (taskId, round); the raw transaction holds a signature, never
the key.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pot import errors

State = Literal["sending", "mined", "final", "already", "failed", "rejected"]
# Terminal: the (task, round) is settled on chain, by us or by someone else.
DONE: frozenset[str] = frozenset({"final", "already"})
# Our transaction may still land: its nonce is reserved.
OPEN: frozenset[str] = frozenset({"sending", "mined"})
_TMP = ".tmp-"
"""Prefix of a save's temp file (renamed over the intent's file once written and synced)."""


@dataclass(kw_only=True)
class Attempt:
    """One signed transaction for an intent; fee bumps add attempts with the same nonce."""

    tx_hash: str
    raw: str
    max_fee: int
    tip: int
    sent_at: float


@dataclass(kw_only=True)
class Intent:
    """One (task, round) this sidecar is settling."""

    task: str
    round: int
    task_id: str
    """0x-hex bytes32."""
    state: State
    nonce: int = -1
    gas: int = 0
    to: str = ""
    data: str = ""
    """Calldata of settle(...), kept so a fee bump re-signs exactly the same call."""
    attempts: list[Attempt] = field(default_factory=list)
    tx_hash: str = ""
    """The attempt that was mined (empty until a receipt is seen)."""
    block_number: int = -1
    block_hash: str = ""
    orphaned_at: float = 0.0
    """When a poll first found our nonce used but no receipt for any attempt (0: not seen)."""
    error: str = ""
    """Why the intent failed or was rejected (a custom error name where there is one)."""
    retries: int = 0
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    @property
    def key(self) -> str:
        """File stem: the on-chain identity of what is settled."""
        return f"{self.task_id.removeprefix('0x')}-{self.round}"

    @property
    def last(self) -> Attempt | None:
        """The newest attempt."""
        return self.attempts[-1] if self.attempts else None

    def to_json(self) -> dict[str, Any]:
        """Serialisable form."""
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Intent:
        """Inverse of ``to_json``."""
        attempts = [Attempt(**a) for a in doc.get("attempts", [])]
        return cls(**{**doc, "attempts": attempts})


class IntentLog:
    """A directory of intents, one file each, replaced atomically."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory) / "intents"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise errors.ConfigError(
                f"settlement state dir {self.directory}: {exc.strerror}"
            ) from exc

    def clear_stale(self) -> None:
        """Remove what saves cut short left (killed between write and rename): the intent's
        file still holds the version before it, which is what a crash there means. Only the
        log's one writer calls this, at start: a reader must not pull a live save's file."""
        for stale in self.directory.glob(_TMP + "*"):
            stale.unlink(missing_ok=True)

    def path(self, task_id: str, round_: int) -> Path:
        """Where the intent for (task_id, round) lives."""
        return self.directory / f"{task_id.removeprefix('0x')}-{round_}.json"

    def get(self, task_id: str, round_: int) -> Intent | None:
        """The intent for (task_id, round), if any."""
        return self._read(self.path(task_id, round_))

    def all(self) -> list[Intent]:
        """Every intent, oldest first."""
        paths = sorted(p for p in self.directory.glob("*.json") if not p.name.startswith(_TMP))
        found = [self._read(p) for p in paths]  # (pathlib's * matches the dotted temp files)
        return sorted((i for i in found if i is not None), key=lambda i: i.created_at)

    def save(self, intent: Intent) -> None:
        """Write ``intent`` durably: temp file, fsync, rename, fsync the directory.

        After this returns, a crash (even kill -9 or power loss) leaves either the old or the
        new version on disk, never a torn one.
        """
        intent.updated_at = time.time()
        target = self.path(intent.task_id, intent.round)
        body = json.dumps(intent.to_json(), indent=1, sort_keys=True).encode()
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=_TMP, suffix=".json")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _read(self, path: Path) -> Intent | None:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise errors.ConfigError(f"intent log {path} is unreadable: {exc}") from exc
        return Intent.from_json(doc)
