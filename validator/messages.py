"""PBFT messages and their wire codec.

Frozen dataclasses for every message of Castro & Liskov's protocol (OSDI 1999
§4; TOCS 2002 §4) plus the two we need for retransmission and state transfer
(STATUS, TOCS §5.2; STATE-REQUEST/STATE-REPLY, TOCS §5.3.2).

Authentication is not in here: the transport authenticates each frame with a
per-pair MAC (``pot.validator.auth``) and hands the core the authenticated
sender; the core checks that the message's ``replica`` field names that same
sender. Only VIEW-CHANGE and NEW-VIEW carry a ``signature`` because they are
relayed: a NEW-VIEW embeds 2f+1 VIEW-CHANGEs that every backup must check
itself (the hybrid the TOCS paper's §4.5 MAC view change avoids needing acks
for). Signatures never appear on the hot path.

The codec is a compact JSON array ``[type, field, ...]``: stdlib only, safe on
untrusted input (no pickle), bytes as hex. ``decode`` never raises: a frame
that is not a well-formed message comes back as a ``Rejection``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, TypeAlias

from pot.validator.rejections import Rejection

MAX_OP_BYTES = 256 * 1024
"""Largest client operation (a proof segment is a few KB, a task spec less)."""
MAX_CLIENT_LEN = 64
MAX_BATCH = 10_000
MAX_INT = 2**63 - 1
DIGEST_LEN = 32


def sha256(data: bytes) -> bytes:
    """The digest used for requests, batches and states."""
    return hashlib.sha256(data).digest()


NULL_DIGEST = sha256(b"pot-pbft-null-request")
"""Digest of the null request a NEW-VIEW uses to fill a gap (PBFT §4.4)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """A client operation. ``(client, ts)`` identifies it for deduplication (PBFT §4.1)."""

    client: str
    ts: int
    op: bytes

    @property
    def key(self) -> tuple[str, int]:
        return (self.client, self.ts)

    def digest(self) -> bytes:
        return sha256(self.client.encode() + b"\0" + self.ts.to_bytes(8, "big") + self.op)


def batch_digest(nonce: bytes, batch: tuple[Request, ...]) -> bytes:
    """Digest of an ordered batch; the primary's nonce makes it unpredictable to clients."""
    if not batch and not nonce:
        return NULL_DIGEST
    h = hashlib.sha256(b"pot-pbft-batch\0" + nonce)
    for r in batch:
        h.update(r.digest())
    return h.digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class Batch:
    """A batch body as carried in VIEW-CHANGE messages."""

    nonce: bytes
    requests: tuple[Request, ...]

    def digest(self) -> bytes:
        return batch_digest(self.nonce, self.requests)


NULL_BATCH = Batch(nonce=b"", requests=())


@dataclass(frozen=True, slots=True, kw_only=True)
class PrePrepare:
    view: int
    seq: int
    digest: bytes
    nonce: bytes
    batch: tuple[Request, ...]
    replica: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Prepare:
    view: int
    seq: int
    digest: bytes
    replica: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Commit:
    view: int
    seq: int
    digest: bytes
    replica: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    seq: int
    digest: bytes
    replica: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PEntry:
    """A request prepared at ``view`` (the P set of TOCS §4.5)."""

    seq: int
    digest: bytes
    view: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ViewChange:
    """VIEW-CHANGE(v+1, h, C, P, Q, i), signed (TOCS §4.5.1)."""

    view: int
    h: int
    checkpoints: tuple[tuple[int, bytes], ...]
    prepared: tuple[PEntry, ...]
    preprepared: tuple[PEntry, ...]
    batches: tuple[Batch, ...]
    replica: int
    signature: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class NewView:
    """NEW-VIEW(v+1, V, X), signed: X is recomputed by every backup from V (TOCS §4.5.2)."""

    view: int
    view_changes: tuple[ViewChange, ...]
    checkpoint: tuple[int, bytes]
    chosen: tuple[tuple[int, bytes], ...]
    replica: int
    signature: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    """Periodic "what I have" beacon that drives retransmission (TOCS §5.2)."""

    view: int
    normal: bool
    h: int
    last_exec: int
    replica: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StateRequest:
    seq: int
    replica: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StateReply:
    seq: int
    digest: bytes
    snapshot: bytes
    replica: int


Message: TypeAlias = (
    Request
    | PrePrepare
    | Prepare
    | Commit
    | Checkpoint
    | ViewChange
    | NewView
    | Status
    | StateRequest
    | StateReply
)


class _Bad(Exception):
    """Internal: a decoding failure, turned into a Rejection at the boundary."""

    def __init__(self, reason: Rejection) -> None:
        self.reason = reason


# ---------------------------------------------------------------------- encode


def _req(r: Request) -> list[Any]:
    return [r.client, r.ts, r.op.hex()]


def _batch(b: Batch) -> list[Any]:
    return [b.nonce.hex(), [_req(r) for r in b.requests]]


def _pentry(e: PEntry) -> list[Any]:
    return [e.seq, e.digest.hex(), e.view]


def _vc(m: ViewChange) -> list[Any]:
    return [
        m.view,
        m.h,
        [[s, d.hex()] for s, d in m.checkpoints],
        [_pentry(e) for e in m.prepared],
        [_pentry(e) for e in m.preprepared],
        [_batch(b) for b in m.batches],
        m.replica,
        m.signature.hex(),
    ]


def _obj(m: Message) -> list[Any]:
    if isinstance(m, Prepare):
        return ["P", m.view, m.seq, m.digest.hex(), m.replica]
    if isinstance(m, Commit):
        return ["C", m.view, m.seq, m.digest.hex(), m.replica]
    if isinstance(m, PrePrepare):
        return [
            "PP",
            m.view,
            m.seq,
            m.digest.hex(),
            m.nonce.hex(),
            [_req(r) for r in m.batch],
            m.replica,
        ]
    if isinstance(m, Request):
        return ["R", *_req(m)]
    if isinstance(m, Checkpoint):
        return ["CK", m.seq, m.digest.hex(), m.replica]
    if isinstance(m, Status):
        return ["S", m.view, m.normal, m.h, m.last_exec, m.replica]
    if isinstance(m, ViewChange):
        return ["VC", *_vc(m)]
    if isinstance(m, NewView):
        return [
            "NV",
            m.view,
            [_vc(v) for v in m.view_changes],
            [m.checkpoint[0], m.checkpoint[1].hex()],
            [[s, d.hex()] for s, d in m.chosen],
            m.replica,
            m.signature.hex(),
        ]
    if isinstance(m, StateRequest):
        return ["SQ", m.seq, m.replica]
    if isinstance(m, StateReply):
        return ["SR", m.seq, m.digest.hex(), m.snapshot.hex(), m.replica]
    raise TypeError(f"not a PBFT message: {type(m).__name__}")


def encode(m: Message) -> bytes:
    """The wire bytes of a message."""
    return json.dumps(_obj(m), separators=(",", ":")).encode()


def signing_bytes(m: ViewChange | NewView) -> bytes:
    """What a VIEW-CHANGE or NEW-VIEW signature covers: the message without its signature."""
    if isinstance(m, ViewChange):
        unsigned: Message = ViewChange(
            view=m.view,
            h=m.h,
            checkpoints=m.checkpoints,
            prepared=m.prepared,
            preprepared=m.preprepared,
            batches=m.batches,
            replica=m.replica,
        )
    else:
        unsigned = NewView(
            view=m.view,
            view_changes=m.view_changes,
            checkpoint=m.checkpoint,
            chosen=m.chosen,
            replica=m.replica,
        )
    return b"pot-pbft-sig\0" + encode(unsigned)


# ---------------------------------------------------------------------- decode


def _int(v: Any) -> int:
    if type(v) is not int or not 0 <= v <= MAX_INT:
        raise _Bad(Rejection.MALFORMED)
    return v


def _bytes(v: Any, length: int | None = None, limit: int = MAX_OP_BYTES * 2) -> bytes:
    if type(v) is not str or len(v) > 2 * limit:
        raise _Bad(Rejection.OVERSIZED if type(v) is str else Rejection.MALFORMED)
    try:
        b = bytes.fromhex(v)
    except ValueError:
        raise _Bad(Rejection.MALFORMED) from None
    if length is not None and len(b) != length:
        raise _Bad(Rejection.MALFORMED)
    return b


def _list(v: Any, n: int | None = None, limit: int = MAX_BATCH) -> list[Any]:
    if type(v) is not list:
        raise _Bad(Rejection.MALFORMED)
    if n is not None and len(v) != n:
        raise _Bad(Rejection.MALFORMED)
    if len(v) > limit:
        raise _Bad(Rejection.OVERSIZED)
    return v


def _d(v: Any) -> bytes:
    return _bytes(v, DIGEST_LEN)


def _unreq(v: Any) -> Request:
    client, ts, op = _list(v, 3)
    if type(client) is not str or not client or len(client) > MAX_CLIENT_LEN:
        raise _Bad(Rejection.MALFORMED)
    raw = _bytes(op)
    if len(raw) > MAX_OP_BYTES:
        raise _Bad(Rejection.OVERSIZED)
    return Request(client=client, ts=_int(ts), op=raw)


def _unbatch(v: Any) -> Batch:
    nonce, reqs = _list(v, 2)
    return Batch(nonce=_bytes(nonce, limit=64), requests=tuple(_unreq(r) for r in _list(reqs)))


def _unpentry(v: Any) -> PEntry:
    s, d, view = _list(v, 3)
    return PEntry(seq=_int(s), digest=_d(d), view=_int(view))


def _pairs(v: Any) -> tuple[tuple[int, bytes], ...]:
    out = []
    for item in _list(v):
        s, d = _list(item, 2)
        out.append((_int(s), _d(d)))
    return tuple(out)


def _unvc(f: list[Any]) -> ViewChange:
    view, h, cks, p, q, batches, replica, sig = _list(f, 8)
    return ViewChange(
        view=_int(view),
        h=_int(h),
        checkpoints=_pairs(cks),
        prepared=tuple(_unpentry(e) for e in _list(p)),
        preprepared=tuple(_unpentry(e) for e in _list(q)),
        batches=tuple(_unbatch(b) for b in _list(batches)),
        replica=_int(replica),
        signature=_bytes(sig, limit=256),
    )


def _decode(o: Any) -> Message:
    if type(o) is not list or not o or type(o[0]) is not str:
        raise _Bad(Rejection.MALFORMED)
    t, f = o[0], o[1:]
    if t in {"P", "C"}:
        view, seq, d, replica = _list(f, 4)
        cls = Prepare if t == "P" else Commit
        return cls(view=_int(view), seq=_int(seq), digest=_d(d), replica=_int(replica))
    if t == "PP":
        view, seq, d, nonce, batch, replica = _list(f, 6)
        return PrePrepare(
            view=_int(view),
            seq=_int(seq),
            digest=_d(d),
            nonce=_bytes(nonce, limit=64),
            batch=tuple(_unreq(r) for r in _list(batch)),
            replica=_int(replica),
        )
    if t == "R":
        return _unreq(f)
    if t == "CK":
        seq, d, replica = _list(f, 3)
        return Checkpoint(seq=_int(seq), digest=_d(d), replica=_int(replica))
    if t == "S":
        view, normal, h, last, replica = _list(f, 5)
        if type(normal) is not bool:
            raise _Bad(Rejection.MALFORMED)
        return Status(
            view=_int(view), normal=normal, h=_int(h), last_exec=_int(last), replica=_int(replica)
        )
    if t == "VC":
        return _unvc(f)
    if t == "NV":
        view, vcs, ck, chosen, replica, sig = _list(f, 6)
        s, d = _list(ck, 2)
        return NewView(
            view=_int(view),
            view_changes=tuple(_unvc(_list(v)) for v in _list(vcs, limit=1024)),
            checkpoint=(_int(s), _d(d)),
            chosen=_pairs(chosen),
            replica=_int(replica),
            signature=_bytes(sig, limit=256),
        )
    if t == "SQ":
        seq, replica = _list(f, 2)
        return StateRequest(seq=_int(seq), replica=_int(replica))
    if t == "SR":
        seq, d, snap, replica = _list(f, 4)
        return StateReply(
            seq=_int(seq), digest=_d(d), snapshot=_bytes(snap, limit=1 << 30), replica=_int(replica)
        )
    raise _Bad(Rejection.UNKNOWN_TYPE)


_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
MAX_DEPTH = 16
"""Our deepest message (NEW-VIEW → VIEW-CHANGE → batch → request) nests 7 levels."""


def too_deep(data: bytes, limit: int = MAX_DEPTH) -> bool:
    """Deeply nested JSON can overflow the C decoder's stack (a segfault, not an exception):
    refuse it before ``json.loads`` ever sees it. Brackets inside strings count too: only a
    message whose own strings are full of brackets can be refused by mistake, and ours are
    hex digits and short client names."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    depth = 0
    for ch in data.translate(None, _NOT_BRACKETS):
        depth += 1 if ch in (0x5B, 0x7B) else -1
        if depth > limit:
            return True
    return False


def decode(data: bytes) -> Message | Rejection:
    """A message from wire bytes, or the reason it is not one. Never raises."""
    if too_deep(data):
        return Rejection.MALFORMED
    try:
        return _decode(json.loads(data))
    except _Bad as bad:
        return bad.reason
    except (ValueError, UnicodeDecodeError, RecursionError):
        return Rejection.MALFORMED
