"""The replica's disk: stable checkpoint, the protocol log after it, the view.

What PBFT needs to survive a crash (TOCS §5.3, §6 on recovery): the last
stable checkpoint (so the replica restarts from a state 2f+1 replicas vouched
for), every PRE-PREPARE it accepted and every PREPARE/COMMIT it sent since
(so it never contradicts a vote it sent, and its next VIEW-CHANGE reports what
it prepared; ``recovering``), the batches it committed (replayed on restart;
anything newer comes by retransmission or state transfer), and its view.

Log before send, in groups: ``apply`` buffers ``Logged`` records; before the
shell lets any message that followed them leave, it writes the buffer and has
it made durable with one ``fdatasync`` for the whole group (``begin_sync``
hands it a duplicate descriptor to sync on a worker thread, so the event loop
goes on while the disk works). ``Committed`` markers need no fsync of their
own (they can be recomputed); ``flush`` writes them every tick.

Layout under ``--data-dir``: ``pbft/stable-<seq>.snap`` and
``pbft/stable.json`` naming it with its seq and digest (each written
atomically: temporary file, fsync, rename). The snapshot is written first
under a new name and the previous one is deleted only once the json points
at the new one, so a crash at any step leaves a json whose snapshot is there
(a single ``stable.snap`` replaced by a second rename could be left beside
the old digest, and the replica restarted from seq 0). ``pbft/log`` (records
appended, rewritten without the records at or below a checkpoint when it
becomes stable) and ``pbft/view``. The log starts with ``MAGIC`` (format and
version); a log without it is refused with an error naming the file, never cut
as a torn tail: it holds votes this replica must not contradict. A log record
is ``len:u32 ‖ crc32:u32 ‖ payload``, the payload a PRE-PREPARE, PREPARE or
COMMIT in the wire encoding (docs/protocol.md), or ``0xC8 ‖ seq:u64 ‖ view:u64
‖ digest:32`` for a committed batch. Loading stops at the first torn or corrupt record (a crash
mid-append; such a record was never acted on) and cuts the file there.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from pathlib import Path

from pot import errors, files
from pot.validator import actions
from pot.validator import messages as m

log = logging.getLogger(__name__)

_HEAD = struct.Struct(">II")
_COMMITTED = struct.Struct(">BQQ32s")
T_COMMITTED = 0xC8
MAGIC = b"POTLOG2\n"
"""First bytes of the log: the record format, version 2 (binary; version 1 was JSON lines)."""


def _record(payload: bytes) -> bytes:
    return _HEAD.pack(len(payload), zlib.crc32(payload)) + payload


class Disk:
    """Applies the core's persistence actions; loads an ``actions.Durable`` on start."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.dir = Path(root) / "pbft"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "log"
        self.view = self._read_view()
        self.records: list[tuple[int, bytes]] = []
        """(seq, record) above the stable checkpoint, in log order: what a truncation keeps."""
        self.buffer: list[bytes] = []
        self.unsynced = False
        """A ``Logged`` record is buffered: ``sync`` before the next message leaves."""
        self.syncs = 0
        self._fd = -1

    def _read_view(self) -> int:
        try:
            return int((self.dir / "view").read_text())
        except (FileNotFoundError, ValueError):
            return 0

    def load(self) -> actions.Durable | None:
        """What the last run left, or None for a fresh replica. Call once, before ``apply``."""
        meta_path = self.dir / "stable.json"
        seq, digest, snap = 0, b"", b""
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            # Before seq-named snapshots, the one snapshot was "stable.snap".
            snap_path = self.dir / Path(str(meta.get("snapshot", "stable.snap"))).name
            try:
                snap = snap_path.read_bytes()
            except FileNotFoundError:
                snap = b""
            seq, digest = int(meta["seq"]), bytes.fromhex(meta["digest"])
            if m.sha256(snap) != digest:
                log.error(
                    "%s does not match the digest of checkpoint %d in %s; starting from scratch",
                    snap_path,
                    seq,
                    meta_path,
                )
                seq, digest, snap = 0, b"", b""
        accepted: list[m.PrePrepare] = []
        sent: list[m.Prepare | m.Commit] = []
        committed: list[tuple[int, int, bytes]] = []
        data = self.path.read_bytes() if self.path.exists() else b""
        if not data.startswith(MAGIC):
            if MAGIC.startswith(data):  # empty, or the header itself torn by a crash
                data = b""
                self.path.unlink(missing_ok=True)
            else:
                raise errors.ConfigError(
                    f"{self.path}: not a PBFT log in this version's format (no {MAGIC!r} "
                    "header); it holds votes this replica must not contradict, so it will not "
                    "start on it. Move the data directory away only if this replica may count "
                    "as one of the f faulty until it has caught up by state transfer"
                )
        off = len(MAGIC) if data else 0
        while off + _HEAD.size <= len(data):
            length, crc = _HEAD.unpack_from(data, off)
            end = off + _HEAD.size + length
            payload = data[off + _HEAD.size : end]
            if end > len(data) or zlib.crc32(payload) != crc:
                break
            rec_seq = self._parse(payload, accepted, sent, committed)
            if rec_seq is None:
                break
            if rec_seq > seq:
                self.records.append((rec_seq, data[off:end]))
            off = end
        if off != len(data):
            log.warning("pbft log: %d bytes after the last whole record cut", len(data) - off)
            os.truncate(self.path, off)
        self._open()
        if seq == 0 and not self.records and self.view == 0:
            return None
        return actions.Durable(
            view=self.view,
            seq=seq,
            digest=digest,
            snapshot=snap,
            accepted=tuple(pp for pp in accepted if pp.seq > seq),
            sent=tuple(v for v in sent if v.seq > seq),
            committed=tuple(c for c in committed if c[0] > seq),
        )

    @staticmethod
    def _parse(
        payload: bytes,
        accepted: list[m.PrePrepare],
        sent: list[m.Prepare | m.Commit],
        committed: list[tuple[int, int, bytes]],
    ) -> int | None:
        if payload[:1] == bytes((T_COMMITTED,)) and len(payload) == _COMMITTED.size:
            _, seq, view, d = _COMMITTED.unpack(payload)
            committed.append((seq, view, d))
            return int(seq)
        msg = m.decode(payload)
        if isinstance(msg, m.PrePrepare):
            accepted.append(msg)
        elif isinstance(msg, m.Prepare | m.Commit):
            sent.append(msg)
        else:
            return None
        return msg.seq

    def _open(self) -> int:
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            if os.fstat(self._fd).st_size == 0:
                os.write(self._fd, MAGIC)
        return self._fd

    def apply(self, action: actions.Action) -> None:
        if isinstance(action, actions.Logged):
            rec = _record(m.encode(action.msg))
            self.records.append((action.msg.seq, rec))
            self.buffer.append(rec)
            self.unsynced = self.unsynced or action.gate
        elif isinstance(action, actions.Committed):
            rec = _record(_COMMITTED.pack(T_COMMITTED, action.seq, action.view, action.digest))
            self.records.append((action.seq, rec))
            self.buffer.append(rec)
        elif isinstance(action, actions.Stable):
            self._save_stable(action)
            self._truncate(action.seq)
        elif isinstance(action, actions.ViewEntered) and action.view > self.view:
            self.view = action.view
            files.write_atomic(self.dir / "view", str(action.view).encode())

    def _save_stable(self, stable: actions.Stable) -> None:
        """New snapshot, then the pointer to it, then the old snapshots: crash-safe at each step."""
        name = f"stable-{stable.seq}.snap"
        files.write_atomic(self.dir / name, stable.snapshot)
        meta = {"seq": stable.seq, "digest": stable.digest.hex(), "snapshot": name}
        files.write_atomic(self.dir / "stable.json", json.dumps(meta).encode())
        for old in self.dir.glob("stable*.snap"):
            if old.name != name:
                old.unlink(missing_ok=True)

    def _truncate(self, seq: int) -> None:
        """Rewrite the log with the records above ``seq``, buffered ones included: once the
        rename is done everything logged so far is durable (``write_atomic`` fsyncs)."""
        self.records = [(s, r) for s, r in self.records if s > seq]
        if self._fd >= 0:
            os.close(self._fd)  # a sync still running on a duplicate is unaffected
            self._fd = -1
        files.write_atomic(self.path, MAGIC + b"".join(r for _, r in self.records))
        self.buffer.clear()
        self.unsynced = False

    def flush(self) -> None:
        """Write what is buffered (no fsync)."""
        if self.buffer:
            data = memoryview(b"".join(self.buffer))
            self.buffer.clear()
            fd = self._open()
            while data:
                data = data[os.write(fd, data) :]

    def sync(self) -> None:
        """Write what is buffered and make it durable, here and now."""
        self.flush()
        if self.unsynced:
            os.fdatasync(self._open())
            self.unsynced = False
            self.syncs += 1

    def begin_sync(self) -> int:
        """Write what is buffered; a duplicate descriptor for the caller to ``fdatasync`` (then
        close), off the event loop. Records logged from now on belong to the next group."""
        self.flush()
        self.unsynced = False
        self.syncs += 1
        return os.dup(self._open())

    def close(self) -> None:
        self.sync()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
