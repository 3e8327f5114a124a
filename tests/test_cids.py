"""CIDv1 vectors: pot's CIDs must be the ones IPFS computes for the same bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pot import cids, errors, store

# (bytes, CID as `ipfs add --cid-version 1 --raw-leaves` prints it)
VECTORS = [
    (b"hello world", "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"),
    (b"", "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"),
    (b"hello world\n", "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"),
]


@pytest.mark.parametrize(("data", "cid"), VECTORS)
def test_known_vectors(data: bytes, cid: str) -> None:
    assert cids.cid_of(data) == cid
    assert cids.digest(cid) == hashlib.sha256(data).digest()
    assert cids.matches(cid, data)


def test_roundtrip_any_digest() -> None:
    for i in range(50):
        d = hashlib.sha256(str(i).encode()).digest()
        assert cids.digest(cids.encode(d)) == d


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "Qmfoo",  # CIDv0 (base58) is not what pot makes
        "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5",  # truncated
        "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",  # dag-pb codec
        "bAFKREI!!!!",
    ],
)
def test_rejects_foreign_or_malformed(bad: str) -> None:
    assert not cids.is_valid(bad)
    with pytest.raises(errors.ProofError):
        cids.digest(bad)


def test_mismatch_detected() -> None:
    assert not cids.matches(cids.cid_of(b"a"), b"b")


def test_only_the_canonical_spelling_is_a_cid(tmp_path: Path) -> None:
    """base32 decoding forgave upper case and the two spare bits of the last character, so
    each blob had eight-plus names; the store keeps it under one (its shard is the name's
    last two characters), and an alias never matched the blob a segment meant."""
    cid = cids.cid_of(b"hello world")
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    aliases = [
        cid[:-1] + alphabet[alphabet.index(cid[-1]) ^ 1],  # a spare bit set
        "b" + cid[1:].upper(),
        cid[:20] + cid[20:].upper(),
    ]
    blobs = store.FilesystemStore(tmp_path)
    blobs.put(b"hello world")
    for alias in aliases:
        assert not cids.is_valid(alias), alias
        with pytest.raises(errors.ProofError, match="canonical"):
            blobs.get(alias)
