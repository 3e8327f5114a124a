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

The codec is binary (``struct``, stdlib only, safe on untrusted input: no
pickle, no recursion on attacker-chosen depth) and *canonical*: every message
has exactly one encoding, and ``decode`` refuses anything else (trailing bytes,
a bool that is not 0/1, non-UTF-8 client names). That is what lets a batch
digest hash the request list's wire bytes directly (one SHA-256 call per batch
instead of one per request) and lets a backup check it on the very bytes it
received. The format is the binding wire contract in docs/protocol.md ("PBFT
wire format"). ``decode`` never raises: a frame that is not a well-formed
message comes back as a ``Rejection``.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import NamedTuple, TypeAlias

from pot import jsonguard
from pot.validator.rejections import Rejection

MAX_OP_BYTES = 256 * 1024
"""Largest client operation (a proof segment is a few KB, a task spec less)."""
MAX_CLIENT_LEN = 64
MAX_BATCH = 10_000
MAX_REQUEST_SIG = 128
"""Longest request signature (a DER ECDSA secp256k1 signature is at most 72 bytes)."""
MAX_INT = 2**63 - 1
DIGEST_LEN = 32


def sha256(data: bytes) -> bytes:
    """The digest used for requests, batches and states."""
    return hashlib.sha256(data).digest()


NULL_DIGEST = sha256(b"pot-pbft-null-request")
"""Digest of the null request a NEW-VIEW uses to fill a gap (PBFT §4.4)."""


class Request(NamedTuple):
    """A client operation. ``(client, ts)`` identifies it for deduplication (PBFT §4.1).
    (A named tuple, unlike the other messages: every replica builds one per request in every
    batch it decodes, and a tuple is built in a third of a frozen dataclass's time.)"""

    client: str
    ts: int
    op: bytes
    sig: bytes = b""
    """The client's signature over ``request_signing_bytes``: required under a replica's own
    client name (``pbft.client_name``), so that no primary can put a request in a batch under a
    correct replica's name (PBFT §4.1: requests are authenticated by their client); empty for
    any other client."""

    @property
    def key(self) -> tuple[str, int]:
        return (self.client, self.ts)

    def digest(self) -> bytes:
        return sha256(_request(self))


def request_signing_bytes(r: Request) -> bytes:
    """What a client signs: the request without its signature, under a domain tag."""
    c = r.client.encode()
    return b"pot-pbft-request\0" + bytes((len(c),)) + c + _REQ_TAIL.pack(r.ts, len(r.op)) + r.op


def batch_digest(nonce: bytes, batch: tuple[Request, ...], wire: bytes | None = None) -> bytes:
    """Digest of an ordered batch: SHA-256 over the nonce and the request list's canonical wire
    bytes (``wire`` when the caller already has them). The primary's nonce makes it
    unpredictable to clients."""
    if not batch and not nonce:
        return NULL_DIGEST
    if wire is None:
        wire = requests_wire(batch)
    return sha256(b"pot-pbft-batch\0" + bytes((len(nonce),)) + nonce + wire)


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
    wire: tuple[tuple[Request, ...], bytes] | None = field(default=None, compare=False, repr=False)
    """Cache: (``batch``, its request-list wire bytes), set by ``decode`` and ``pre_prepare``.
    Used only while ``batch`` is that very tuple, so ``dataclasses.replace`` cannot stale it."""

    def batch_wire(self) -> bytes:
        w = self.wire
        return w[1] if w is not None and w[0] is self.batch else requests_wire(self.batch)

    def actual_digest(self) -> bytes:
        """The digest of the batch this message really carries (to check against ``digest``)."""
        return batch_digest(self.nonce, self.batch, self.batch_wire())


def pre_prepare(
    *, view: int, seq: int, nonce: bytes, batch: tuple[Request, ...], replica: int
) -> PrePrepare:
    """A PRE-PREPARE with its digest computed (and the wire bytes it hashed kept for encoding)."""
    wire = requests_wire(batch)
    return PrePrepare(
        view=view,
        seq=seq,
        digest=batch_digest(nonce, batch, wire),
        nonce=nonce,
        batch=batch,
        replica=replica,
        wire=(batch, wire),
    )


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


# ---------------------------------------------------------------------- wire format
# docs/protocol.md "PBFT wire format": a one-byte type tag, then fixed-width big-endian
# integers, 32-byte digests and length-prefixed byte strings; lists are u32 count + items.

T_REQUEST, T_PRE_PREPARE, T_PREPARE, T_COMMIT, T_CHECKPOINT = 1, 2, 3, 4, 5
T_STATUS, T_VIEW_CHANGE, T_NEW_VIEW, T_STATE_REQUEST, T_STATE_REPLY = 6, 7, 8, 9, 10

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_REQ_TAIL = struct.Struct(">QI")  # ts, len(op)
_VOTE = struct.Struct(">BQQH32s")  # tag, view, seq, replica, digest
_PP_HEAD = struct.Struct(">BQQH32sB")  # tag, view, seq, replica, digest, len(nonce)
_CHECKPOINT = struct.Struct(">BQH32s")  # tag, seq, replica, digest
_STATUS = struct.Struct(">BQBQQH")  # tag, view, normal, h, last_exec, replica
_STATE_REQUEST = struct.Struct(">BQH")  # tag, seq, replica
_STATE_REPLY = struct.Struct(">BQH32sI")  # tag, seq, replica, digest, len(snapshot)
_VC_HEAD = struct.Struct(">QQH")  # view, h, replica
_NV_HEAD = struct.Struct(">BQHQ32s")  # tag, view, replica, checkpoint seq, checkpoint digest
_PAIR = struct.Struct(">Q32s")  # seq, digest
_ENTRY = struct.Struct(">Q32sQ")  # seq, digest, view
MAX_SNAPSHOT = 1 << 30
MAX_SIGNATURE = 256
MAX_NONCE = 64
MAX_VIEW_CHANGES = 1024


# ---------------------------------------------------------------------- encode


def _request(r: Request) -> bytes:
    c = r.client.encode()
    return (
        bytes((len(c),)) + c + _REQ_TAIL.pack(r.ts, len(r.op)) + r.op + bytes((len(r.sig),)) + r.sig
    )


def requests_wire(batch: tuple[Request, ...]) -> bytes:
    """The canonical bytes of a request list (what batch digests hash)."""
    return _U32.pack(len(batch)) + b"".join([_request(r) for r in batch])


def _batch(b: Batch) -> bytes:
    return bytes((len(b.nonce),)) + b.nonce + requests_wire(b.requests)


def _pairs(pairs: tuple[tuple[int, bytes], ...]) -> bytes:
    return _U32.pack(len(pairs)) + b"".join([_PAIR.pack(s, d) for s, d in pairs])


def _entries(es: tuple[PEntry, ...]) -> bytes:
    return _U32.pack(len(es)) + b"".join([_ENTRY.pack(e.seq, e.digest, e.view) for e in es])


def _vc(m: ViewChange) -> bytes:
    return b"".join(
        [
            _VC_HEAD.pack(m.view, m.h, m.replica),
            _pairs(m.checkpoints),
            _entries(m.prepared),
            _entries(m.preprepared),
            _U32.pack(len(m.batches)),
            *[_batch(b) for b in m.batches],
            _U16.pack(len(m.signature)),
            m.signature,
        ]
    )


def encode(m: Message) -> bytes:
    """The wire bytes of a message."""
    if isinstance(m, Prepare | Commit):
        tag = T_PREPARE if type(m) is Prepare else T_COMMIT
        return _VOTE.pack(tag, m.view, m.seq, m.replica, m.digest)
    if isinstance(m, PrePrepare):
        head = _PP_HEAD.pack(T_PRE_PREPARE, m.view, m.seq, m.replica, m.digest, len(m.nonce))
        return head + m.nonce + m.batch_wire()
    if isinstance(m, Request):
        return bytes((T_REQUEST,)) + _request(m)
    if isinstance(m, Checkpoint):
        return _CHECKPOINT.pack(T_CHECKPOINT, m.seq, m.replica, m.digest)
    if isinstance(m, Status):
        return _STATUS.pack(T_STATUS, m.view, m.normal, m.h, m.last_exec, m.replica)
    if isinstance(m, ViewChange):
        return bytes((T_VIEW_CHANGE,)) + _vc(m)
    if isinstance(m, NewView):
        return b"".join(
            [
                _NV_HEAD.pack(T_NEW_VIEW, m.view, m.replica, m.checkpoint[0], m.checkpoint[1]),
                _pairs(m.chosen),
                _U32.pack(len(m.view_changes)),
                *[_vc(vc) for vc in m.view_changes],
                _U16.pack(len(m.signature)),
                m.signature,
            ]
        )
    if isinstance(m, StateRequest):
        return _STATE_REQUEST.pack(T_STATE_REQUEST, m.seq, m.replica)
    if isinstance(m, StateReply):
        return _STATE_REPLY.pack(T_STATE_REPLY, m.seq, m.replica, m.digest, len(m.snapshot)) + (
            m.snapshot
        )
    raise TypeError(f"not a PBFT message: {type(m).__name__}")


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
# Each reader takes (buffer, offset) and returns (value, next offset); a short buffer makes
# ``struct`` raise ``struct.error``, which ``decode`` maps to MALFORMED like any other flaw.


def _take(buf: bytes, off: int, n: int) -> tuple[bytes, int]:
    end = off + n
    if end > len(buf):
        raise _Bad(Rejection.MALFORMED)
    return buf[off:end], end


def _count(buf: bytes, off: int, limit: int) -> tuple[int, int]:
    (n,) = _U32.unpack_from(buf, off)
    if n > limit:
        raise _Bad(Rejection.OVERSIZED)
    return n, off + 4


def _requests(buf: bytes, off: int) -> tuple[tuple[Request, ...], int]:
    n, off = _count(buf, off, MAX_BATCH)
    size = len(buf)
    out = []
    unpack = _REQ_TAIL.unpack_from
    new = tuple.__new__  # Request(...) without its Python-level __new__: a third faster here
    for _ in range(n):
        cl = buf[off]
        end = off + 1 + cl
        if cl == 0 or cl > MAX_CLIENT_LEN or end + 12 > size:
            raise _Bad(Rejection.MALFORMED)
        client = buf[off + 1 : end].decode()
        ts, ol = unpack(buf, end)
        if ol > MAX_OP_BYTES:
            raise _Bad(Rejection.OVERSIZED)
        sl_at = end + 12 + ol
        if sl_at >= size:
            raise _Bad(Rejection.MALFORMED)
        sl = buf[sl_at]
        off = sl_at + 1 + sl
        if sl > MAX_REQUEST_SIG or off > size:
            raise _Bad(Rejection.MALFORMED)
        out.append(new(Request, (client, ts, buf[end + 12 : sl_at], buf[sl_at + 1 : off])))
    return tuple(out), off


def _request_at(buf: bytes, off: int) -> tuple[Request, int]:
    cl = buf[off]
    end = off + 1 + cl
    if cl == 0 or cl > MAX_CLIENT_LEN:
        raise _Bad(Rejection.MALFORMED)
    client = buf[off + 1 : end].decode()
    ts, ol = _REQ_TAIL.unpack_from(buf, end)
    if ol > MAX_OP_BYTES:
        raise _Bad(Rejection.OVERSIZED)
    op, off = _take(buf, end + 12, ol)
    sl = buf[off]
    if sl > MAX_REQUEST_SIG:
        raise _Bad(Rejection.MALFORMED)
    sig, off = _take(buf, off + 1, sl)
    return Request(client=client, ts=ts, op=op, sig=sig), off


def _unbatch(buf: bytes, off: int) -> tuple[Batch, int]:
    nonce, off = _take(buf, off + 1, buf[off])
    if len(nonce) > MAX_NONCE:
        raise _Bad(Rejection.MALFORMED)
    reqs, off = _requests(buf, off)
    return Batch(nonce=nonce, requests=reqs), off


def _unpairs(buf: bytes, off: int) -> tuple[tuple[tuple[int, bytes], ...], int]:
    n, off = _count(buf, off, MAX_BATCH)
    out = []
    for _ in range(n):
        out.append(_PAIR.unpack_from(buf, off))
        off += _PAIR.size
    return tuple(out), off


def _unentries(buf: bytes, off: int) -> tuple[tuple[PEntry, ...], int]:
    n, off = _count(buf, off, MAX_BATCH)
    out = []
    for _ in range(n):
        s, d, v = _ENTRY.unpack_from(buf, off)
        out.append(PEntry(seq=s, digest=d, view=v))
        off += _ENTRY.size
    return tuple(out), off


def _signature(buf: bytes, off: int) -> tuple[bytes, int]:
    (n,) = _U16.unpack_from(buf, off)
    if n > MAX_SIGNATURE:
        raise _Bad(Rejection.OVERSIZED)
    return _take(buf, off + 2, n)


def _unvc(buf: bytes, off: int) -> tuple[ViewChange, int]:
    view, h, replica = _VC_HEAD.unpack_from(buf, off)
    cks, off = _unpairs(buf, off + _VC_HEAD.size)
    p, off = _unentries(buf, off)
    q, off = _unentries(buf, off)
    n, off = _count(buf, off, MAX_BATCH)
    batches = []
    for _ in range(n):
        b, off = _unbatch(buf, off)
        batches.append(b)
    sig, off = _signature(buf, off)
    vc = ViewChange(
        view=view,
        h=h,
        checkpoints=cks,
        prepared=p,
        preprepared=q,
        batches=tuple(batches),
        replica=replica,
        signature=sig,
    )
    return vc, off


def _decode(buf: bytes) -> tuple[Message, int]:
    t = buf[0]
    if t in (T_PREPARE, T_COMMIT):
        _, view, seq, replica, d = _VOTE.unpack_from(buf)
        cls = Prepare if t == T_PREPARE else Commit
        return cls(view=view, seq=seq, digest=d, replica=replica), _VOTE.size
    if t == T_PRE_PREPARE:
        _, view, seq, replica, d, nl = _PP_HEAD.unpack_from(buf)
        if nl > MAX_NONCE:
            raise _Bad(Rejection.MALFORMED)
        nonce, start = _take(buf, _PP_HEAD.size, nl)
        reqs, off = _requests(buf, start)
        pp = PrePrepare(
            view=view,
            seq=seq,
            digest=d,
            nonce=nonce,
            batch=reqs,
            replica=replica,
            wire=(reqs, buf[start:off]),
        )
        return pp, off
    if t == T_REQUEST:
        return _request_at(buf, 1)
    if t == T_CHECKPOINT:
        _, seq, replica, d = _CHECKPOINT.unpack_from(buf)
        return Checkpoint(seq=seq, digest=d, replica=replica), _CHECKPOINT.size
    if t == T_STATUS:
        _, view, normal, h, last, replica = _STATUS.unpack_from(buf)
        if normal > 1:
            raise _Bad(Rejection.MALFORMED)
        status = Status(view=view, normal=normal == 1, h=h, last_exec=last, replica=replica)
        return status, _STATUS.size
    if t == T_VIEW_CHANGE:
        return _unvc(buf, 1)
    if t == T_NEW_VIEW:
        _, view, replica, ck_seq, ck_d = _NV_HEAD.unpack_from(buf)
        chosen, off = _unpairs(buf, _NV_HEAD.size)
        n, off = _count(buf, off, MAX_VIEW_CHANGES)
        vcs = []
        for _ in range(n):
            vc, off = _unvc(buf, off)
            vcs.append(vc)
        sig, off = _signature(buf, off)
        nv = NewView(
            view=view,
            view_changes=tuple(vcs),
            checkpoint=(ck_seq, ck_d),
            chosen=chosen,
            replica=replica,
            signature=sig,
        )
        return nv, off
    if t == T_STATE_REQUEST:
        _, seq, replica = _STATE_REQUEST.unpack_from(buf)
        return StateRequest(seq=seq, replica=replica), _STATE_REQUEST.size
    if t == T_STATE_REPLY:
        _, seq, replica, d, sl = _STATE_REPLY.unpack_from(buf)
        if sl > MAX_SNAPSHOT:
            raise _Bad(Rejection.OVERSIZED)
        snap, off = _take(buf, _STATE_REPLY.size, sl)
        return StateReply(seq=seq, digest=d, snapshot=snap, replica=replica), off
    raise _Bad(Rejection.UNKNOWN_TYPE)


def decode(data: bytes) -> Message | Rejection:
    """A message from wire bytes, or the reason it is not one. Never raises."""
    try:
        msg, end = _decode(data)
    except _Bad as bad:
        return bad.reason
    except (struct.error, IndexError, UnicodeDecodeError):
        return Rejection.MALFORMED
    if end != len(data):
        return Rejection.MALFORMED  # trailing bytes: the encoding would not be canonical
    return msg


# ---------------------------------------------------------------------- JSON guard

MAX_DEPTH = 16
"""Nesting the HTTP API allows in the JSON it parses (segments, task specs)."""


def too_deep(data: bytes, limit: int = MAX_DEPTH) -> bool:
    """Deeply nested JSON can overflow the C decoder's stack (``pot.jsonguard``)."""
    return jsonguard.too_deep(data, limit)
