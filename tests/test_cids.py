"""CIDv1 vectors: pot's CIDs must be the ones IPFS computes for the same bytes."""

from __future__ import annotations

import hashlib

import pytest

from pot import cids, errors

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
