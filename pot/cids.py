"""Content identifiers: real IPFS CIDv1 (raw codec, sha2-256, base32).

Checkpoints and datasets are addressed by the hash of their bytes, the way
IPFS does it, so any party can check a blob against the commitment that names
it (DESIGN §4.2). Only the subset pot needs is implemented, from the specs:

- CIDv1 binary = varint(version=1) varint(codec) multihash
- raw codec = 0x55; multihash = varint(0x12 sha2-256) varint(32) digest
- string form = multibase prefix ``b`` + RFC 4648 base32, lower case, no padding

so ``cid_of(b"hello world")`` is
``bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e``.
"""

from __future__ import annotations

import base64
import hashlib

from pot import errors

CID_VERSION = 1
RAW_CODEC = 0x55
SHA2_256 = 0x12
DIGEST_LEN = 32
_PREFIX = bytes([CID_VERSION, RAW_CODEC, SHA2_256, DIGEST_LEN])
_MULTIBASE_BASE32 = "b"


def cid_of(data: bytes) -> str:
    """The CIDv1 (raw, sha2-256, base32) of ``data``."""
    return encode(hashlib.sha256(data).digest())


def encode(digest: bytes) -> str:
    """The CID string of a sha2-256 digest."""
    if len(digest) != DIGEST_LEN:
        raise ValueError(f"sha2-256 digest must be {DIGEST_LEN} bytes, got {len(digest)}")
    text = base64.b32encode(_PREFIX + digest).decode("ascii").lower().rstrip("=")
    return _MULTIBASE_BASE32 + text


def digest(cid: str) -> bytes:
    """The sha2-256 digest a CID commits to; ProofError if it is not one pot makes."""
    if not isinstance(cid, str) or not cid.startswith(_MULTIBASE_BASE32) or len(cid) < 10:
        raise errors.ProofError(f"not a base32 CIDv1: {cid!r}")
    body = cid[1:].upper()
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except ValueError as exc:
        raise errors.ProofError(f"CID {cid!r} is not valid base32") from exc
    if raw[:4] != _PREFIX or len(raw) != len(_PREFIX) + DIGEST_LEN:
        raise errors.ProofError(f"CID {cid!r} is not CIDv1/raw/sha2-256")
    # The decoder forgives upper case and stray bits in the last character: one blob, many
    # names. Only the spelling cid_of makes is a CID (the store files a blob under its name).
    if encode(raw[4:]) != cid:
        raise errors.ProofError(f"CID {cid!r} is not in canonical form (lower-case base32)")
    return raw[4:]


def is_valid(cid: str) -> bool:
    """True if ``cid`` parses as a CID pot makes."""
    try:
        digest(cid)
    except errors.ProofError:
        return False
    return True


def matches(cid: str, data: bytes) -> bool:
    """True if ``data`` hashes to ``cid``."""
    return digest(cid) == hashlib.sha256(data).digest()
