"""The binary PBFT codec (docs/protocol.md "PBFT wire format"): round trips, canonical
encodings, and hostile bytes that must come back as a named rejection, never an exception."""

from __future__ import annotations

import random
import struct

import pytest

from pot.validator import messages as m
from pot.validator.rejections import Rejection

REQ = m.Request(client="c", ts=7, op=b"\x00\xff")
SIGNED = m.Request(client="r1", ts=8, op=b"op", sig=b"\x30" * 71)
VC = m.ViewChange(
    view=2,
    h=0,
    checkpoints=((0, b"\4" * 32),),
    prepared=(m.PEntry(seq=1, digest=b"\5" * 32, view=1),),
    preprepared=(m.PEntry(seq=1, digest=b"\6" * 32, view=1),),
    batches=(m.Batch(nonce=b"n", requests=(REQ,)),),
    replica=1,
    signature=b"s",
)
MESSAGES: list[m.Message] = [
    REQ,
    m.Request(client="ü" * 32, ts=2**64 - 1, op=b""),
    SIGNED,
    m.PrePrepare(view=1, seq=2, digest=b"\1" * 32, nonce=b"ab", batch=(REQ,), replica=1),
    m.PrePrepare(
        view=1, seq=2, digest=b"\1" * 32, nonce=b"ab", batch=(SIGNED, REQ, SIGNED), replica=1
    ),
    m.PrePrepare(view=1, seq=2, digest=m.NULL_DIGEST, nonce=b"", batch=(), replica=1),
    m.Prepare(view=1, seq=2, digest=b"\2" * 32, replica=3),
    m.Commit(view=1, seq=2, digest=b"\2" * 32, replica=3),
    m.Checkpoint(seq=64, digest=b"\3" * 32, replica=0),
    m.Status(view=1, normal=False, h=0, last_exec=3, replica=2),
    m.Status(view=1, normal=True, h=0, last_exec=3, replica=2),
    m.StateRequest(seq=64, replica=1),
    m.StateReply(seq=64, digest=b"\3" * 32, snapshot=b"snap", replica=2),
    VC,
    m.NewView(
        view=2,
        view_changes=(VC, VC),
        checkpoint=(0, b"\4" * 32),
        chosen=((1, b"\5" * 32),),
        replica=2,
        signature=b"t",
    ),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda x: type(x).__name__)
def test_roundtrip_is_exact_and_canonical(msg: m.Message) -> None:
    data = m.encode(msg)
    back = m.decode(data)
    assert back == msg
    assert not isinstance(back, Rejection)
    assert m.encode(back) == data  # one encoding per message
    assert m.decode(data + b"\0") is Rejection.MALFORMED  # trailing bytes


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda x: type(x).__name__)
def test_every_truncation_is_refused(msg: m.Message) -> None:
    data = m.encode(msg)
    for cut in range(len(data)):
        assert isinstance(m.decode(data[:cut]), Rejection), cut


def test_random_corruption_never_raises() -> None:
    rng = random.Random(6)
    for msg in MESSAGES:
        data = bytearray(m.encode(msg))
        for _ in range(300):
            bad = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                bad[rng.randrange(len(bad))] = rng.randrange(256)
            got = m.decode(bytes(bad))
            if not isinstance(got, Rejection):
                assert m.encode(got) == bytes(bad)  # whatever decodes is canonical


def test_batch_digest_hashes_the_wire_bytes_once() -> None:
    batch = (REQ, m.Request(client="d", ts=1, op=b"x"))
    pp = m.pre_prepare(view=0, seq=1, nonce=b"n", batch=batch, replica=0)
    assert pp.digest == m.batch_digest(b"n", batch) == pp.actual_digest()
    decoded = m.decode(m.encode(pp))
    assert isinstance(decoded, m.PrePrepare) and decoded.actual_digest() == pp.digest
    # The cache follows the batch: a replaced batch is hashed afresh, never the stale bytes.
    import dataclasses

    other = dataclasses.replace(decoded, batch=batch[:1])
    assert other.actual_digest() == m.batch_digest(b"n", batch[:1]) != pp.digest
    assert m.batch_digest(b"", ()) == m.NULL_DIGEST
    assert m.batch_digest(b"n", ()) != m.NULL_DIGEST
    # The signature is part of the request's bytes, so of the batch digest, but not of what
    # the client signs (the signature cannot sign itself).
    assert m.batch_digest(b"n", (SIGNED,)) != m.batch_digest(b"n", (SIGNED._replace(sig=b""),))
    assert m.request_signing_bytes(SIGNED) == m.request_signing_bytes(SIGNED._replace(sig=b""))
    assert m.request_signing_bytes(SIGNED) != m.request_signing_bytes(SIGNED._replace(ts=9))


def test_hostile_frames_are_named() -> None:
    head = struct.pack(">BQQH32sB", m.T_PRE_PREPARE, 0, 1, 0, b"\0" * 32, 0)
    cases = [
        (b"", Rejection.MALFORMED),
        (b"\xff", Rejection.UNKNOWN_TYPE),
        (b"\x00", Rejection.UNKNOWN_TYPE),
        (b"[]", Rejection.UNKNOWN_TYPE),
        (bytes([m.T_STATUS]) + struct.pack(">QBQQH", 1, 2, 0, 0, 1), Rejection.MALFORMED),
        (bytes([m.T_REQUEST, 0]) + struct.pack(">QI", 1, 0), Rejection.MALFORMED),  # no client
        (bytes([m.T_REQUEST, 1, 0xFF]) + struct.pack(">QI", 1, 0), Rejection.MALFORMED),  # utf-8
        (
            bytes([m.T_REQUEST, 1]) + b"c" + struct.pack(">QI", 1, m.MAX_OP_BYTES + 1),
            Rejection.OVERSIZED,
        ),
        (  # a request signature longer than any ECDSA signature
            bytes([m.T_REQUEST, 1]) + b"c" + struct.pack(">QI", 1, 0) + bytes([200]) + b"s" * 200,
            Rejection.MALFORMED,
        ),
        (
            head
            + struct.pack(">I", 1)
            + b"\1c"
            + struct.pack(">QI", 1, 0)
            + bytes([129])
            + b"s" * 129,
            Rejection.MALFORMED,
        ),
        (head + struct.pack(">I", m.MAX_BATCH + 1), Rejection.OVERSIZED),
        (head + struct.pack(">I", 3), Rejection.MALFORMED),  # claims 3 requests, has none
        (
            struct.pack(">BQH32sI", m.T_STATE_REPLY, 1, 0, b"\0" * 32, m.MAX_SNAPSHOT + 1),
            Rejection.OVERSIZED,
        ),
    ]
    for data, reason in cases:
        assert m.decode(data) is reason, data[:16]


def test_json_guard_for_the_http_api() -> None:
    assert m.too_deep(b"[" * 100000, 64)
    assert not m.too_deep(b'{"a": [1, 2]}', 64)
