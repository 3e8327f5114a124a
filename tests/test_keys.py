"""Key loading: files and env only, errors name the source, key material never shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from pot import errors, keys, signing

DEV_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
DEV_ADDR = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def test_from_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "validator-0.key"
    f.write_text(DEV_KEY[2:] + "\n")
    assert keys.from_file(f).address == DEV_ADDR
    monkeypatch.setenv("POT_TEST_KEY", DEV_KEY)
    assert keys.load(env="POT_TEST_KEY").address == DEV_ADDR


def test_repr_hides_key(tmp_path: Path) -> None:
    f = tmp_path / "k"
    f.write_text(DEV_KEY)
    k = keys.from_file(f)
    shown = repr(k) + str(k) + f"{k}"
    assert DEV_ADDR in shown
    assert DEV_KEY[2:] not in shown


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("", "not a secp256k1 private key"),
        ("0x1234", "not a secp256k1 private key"),
        ("zz" * 32, "not a secp256k1 private key"),
        ("0" * 64, "out of range"),
        ("f" * 64, "out of range"),
    ],
)
def test_bad_key_files(tmp_path: Path, content: str, match: str) -> None:
    f = tmp_path / "bad.key"
    f.write_text(content)
    with pytest.raises(errors.KeyLoadError, match=match) as info:
        keys.from_file(f)
    assert str(f) in str(info.value)
    assert info.value.__cause__ is None or content not in str(info.value.__cause__)


def test_a_raw_binary_key_file_is_refused_without_a_traceback(tmp_path: Path) -> None:
    secret = bytes(range(0x80, 0xA0))  # 32 raw bytes, not UTF-8
    f = tmp_path / "raw.key"
    f.write_bytes(secret)
    with pytest.raises(errors.KeyLoadError) as info:
        keys.from_file(f)
    assert str(info.value) == (
        f"key file {f}: not text (expected 64 hex digits, optionally 0x-prefixed)"
    )
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_missing_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(errors.KeyLoadError, match="no such file"):
        keys.from_file(tmp_path / "absent.key")
    monkeypatch.delenv("POT_ABSENT", raising=False)
    with pytest.raises(errors.KeyLoadError, match="POT_ABSENT is not set"):
        keys.from_env("POT_ABSENT")
    with pytest.raises(errors.KeyLoadError, match="no key source"):
        keys.load()


def test_eip712_sign_recover_bound_to_domain() -> None:
    k = keys.generate()
    types = {"Ping": [{"name": "n", "type": "uint256"}]}
    dom = signing.domain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")
    sig = signing.sign(k, dom, types, "Ping", {"n": 7})
    assert signing.recover(sig, dom, types, "Ping", {"n": 7}) == k.address
    other_chain = signing.domain(1, "0x5FbDB2315678afecb367f032d93F642f64180aa3")
    assert signing.recover(sig, other_chain, types, "Ping", {"n": 7}) != k.address
    other_contract = signing.domain(31337, "0x" + "11" * 20)
    assert signing.recover(sig, other_contract, types, "Ping", {"n": 7}) != k.address
    assert signing.recover(sig, dom, types, "Ping", {"n": 8}) != k.address
    with pytest.raises(errors.ProtocolError, match="65 bytes"):
        signing.recover("0x1234", dom, types, "Ping", {"n": 7})


def malleable_forms(sig: str) -> dict[str, str]:
    """The same signature in the forms eth_account recovers but the contract refuses."""
    raw = bytes.fromhex(sig.removeprefix("0x"))
    r, s, v = raw[:32], int.from_bytes(raw[32:64], "big"), raw[64]
    high_s = (signing.SECP256K1_N - s).to_bytes(32, "big")
    flipped = 55 - v  # 27 <-> 28: the high-s form recovers the same key with the other parity
    return {
        "high_s": "0x" + (r + high_s + bytes((flipped,))).hex(),
        "v_0_1": "0x" + (r + s.to_bytes(32, "big") + bytes((v - 27,))).hex(),
        "zero_r": "0x" + (bytes(32) + raw[32:]).hex(),
    }


@pytest.mark.parametrize("form", ["high_s", "v_0_1", "zero_r"])
def test_only_canonical_signatures_recover(form: str) -> None:
    """A peer must not be able to store a signature the settlement contract will refuse
    (each replica keeps a peer's first allocation signature; a refused one would block the
    quorum). eth_account alone accepts the first two; the contract's ECDSA refuses all."""
    k = keys.generate()
    types = {"Ping": [{"name": "n", "type": "uint256"}]}
    dom = signing.domain(31337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")
    sig = signing.sign(k, dom, types, "Ping", {"n": 7})
    bad = malleable_forms(sig)[form]
    with pytest.raises(errors.ProtocolError, match=r"canonical|27 or 28"):
        signing.recover(bad, dom, types, "Ping", {"n": 7})
