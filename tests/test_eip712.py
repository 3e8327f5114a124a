"""pot.eip712 against eth_account's typed-data encoder (the reference implementation), for
every type pot signs and for random values; and the keys made without eth_account against
eth_account's view of the same key."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak, to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from pot import eip712, errors, keys, signing
from pot.settlement import allocations
from pot.trainer import segments
from pot.validator import verdicts


def reference(domain: dict[str, Any], types: Any, primary: str, message: dict[str, Any]) -> bytes:
    order = ("name", "version", "chainId", "verifyingContract", "salt")
    kinds = dict(eip712.DOMAIN_FIELDS)
    full = {
        "types": {
            "EIP712Domain": [{"name": k, "type": kinds[k]} for k in order if k in domain],
            **{k: list(v) for k, v in types.items()},
        },
        "primaryType": primary,
        "domain": domain,
        "message": message,
    }
    s = encode_typed_data(full_message=full)
    return bytes(keccak(b"\x19" + s.version + s.header + s.body))


addresses = st.binary(min_size=20, max_size=20).map(to_checksum_address)
uints = st.integers(min_value=0, max_value=2**256 - 1)
DOMAIN = signing.domain(31337, "0x" + "ab" * 20)


@settings(max_examples=60, deadline=None)
@given(
    task_id=st.binary(min_size=32, max_size=32),
    rnd=uints,
    payees=st.lists(st.tuples(addresses, uints), max_size=5),
    slashed=st.lists(st.tuples(addresses, uints), max_size=3),
    met=st.booleans(),
    token=addresses,
)
def test_allocation_digest_matches_eth_account(
    task_id: bytes, rnd: int, payees: list[Any], slashed: list[Any], met: bool, token: str
) -> None:
    msg = {
        "taskId": task_id,
        "round": rnd,
        "payees": [a for a, _ in payees],
        "amounts": [x for _, x in payees],
        "slashed": [a for a, _ in slashed],
        "slashAmounts": [x for _, x in slashed],
        "targetMet": met,
        "token": token,
    }
    got = signing.digest(DOMAIN, allocations.TYPES, allocations.PRIMARY_TYPE, msg)
    assert got == reference(DOMAIN, allocations.TYPES, allocations.PRIMARY_TYPE, msg)


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(max_size=40),
    n=uints,
    h=st.binary(min_size=32, max_size=32),
    miners=st.lists(addresses, max_size=4),
    flag=st.booleans(),
)
def test_offchain_digests_match_eth_account(
    text: str, n: int, h: bytes, miners: list[str], flag: bool
) -> None:
    cases: list[tuple[dict[str, Any], Any, str, dict[str, Any]]] = [
        (
            segments.DOMAIN,
            segments.TYPES,
            segments.PRIMARY,
            {
                "task": text,
                "index": n,
                "startStep": 0,
                "steps": 5,
                "startCid": text,
                "endCid": "b" + text,
                "bodyHash": h,
            },
        ),
        (
            verdicts.VERDICT_DOMAIN,
            verdicts.VERDICT_TYPES,
            "Verdict",
            {
                "task": text,
                "miner": miners[0].lower() if miners else "0x" + "00" * 20,
                "index": n,
                "segment": h,
                "valid": flag,
                "reason": text,
            },
        ),
        (
            signing.offchain_domain("register"),
            signing.REGISTER_TYPES,
            "Register",
            # Any spelling the ABI encoder takes: checksummed, lower case, without 0x.
            {
                "task": text,
                "uid": "u",
                "specHash": h,
                "miners": [*miners, *(a[2:].lower() for a in miners)],
            },
        ),
    ]
    for domain, types, primary, msg in cases:
        assert signing.digest(domain, types, primary, msg) == reference(domain, types, primary, msg)


def test_nested_structs_fixed_arrays_and_signed_ints_match_eth_account() -> None:
    types = {
        "Mail": [
            {"name": "from", "type": "Person"},
            {"name": "to", "type": "Person[2]"},
            {"name": "delta", "type": "int64"},
            {"name": "blob", "type": "bytes"},
            {"name": "tag", "type": "bytes4"},
        ],
        "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
    }
    a = {"name": "a", "wallet": "0x" + "11" * 20}
    msg = {"from": a, "to": [a, {**a, "name": "b"}], "delta": -5, "blob": b"\x01\x02", "tag": b"ab"}
    domain = {**DOMAIN, "salt": b"\x07" * 32}
    assert eip712.encode_type(types, "Mail") == (
        "Mail(Person from,Person[2] to,int64 delta,bytes blob,bytes4 tag)"
        "Person(string name,address wallet)"
    )
    assert eip712.digest(domain, types, "Mail", msg) == reference(domain, types, "Mail", msg)


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("index", -1, "out of range"),
        ("index", 2**256, "out of range"),
        ("index", True, "integer"),
        ("index", "5", "integer"),
        ("bodyHash", b"\x00" * 33, "do not fit"),
        ("bodyHash", "nothex", "bytes"),
        ("task", 5, "string"),
    ],
)
def test_bad_values_name_the_field(field: str, value: Any, match: str) -> None:
    msg = {
        "task": "t",
        "index": 0,
        "startStep": 0,
        "steps": 1,
        "startCid": "a",
        "endCid": "b",
        "bodyHash": b"\x00" * 32,
    }
    with pytest.raises(ValueError, match=f"Segment.{field}: .*{match}"):
        eip712.digest(segments.DOMAIN, segments.TYPES, segments.PRIMARY, {**msg, field: value})


def test_a_bad_address_is_refused_and_recover_says_malformed() -> None:
    good = to_checksum_address("0x" + "ab" * 20)
    bad = good[:-1] + "g"
    msg = {"task": "t", "uid": "", "specHash": b"\0" * 32, "miners": [bad]}
    with pytest.raises(ValueError, match=r"Register.miners\[0\]: not an address"):
        eip712.digest(signing.offchain_domain("register"), signing.REGISTER_TYPES, "Register", msg)
    sig = signing.sign_registration(keys.generate(), "t", {}, [good])
    with pytest.raises(errors.ProtocolError, match="malformed"):
        signing.registration_signer(sig, "t", {}, [bad])


def test_signatures_are_eth_accounts_and_recover_to_the_key() -> None:
    key = keys.generate()
    assert key.address == key.account.address
    msg = {"task": "t"}
    sig = signing.sign(key, verdicts.VERDICT_DOMAIN, verdicts.AUDITED_TYPES, "Audited", msg)
    h = signing.digest(verdicts.VERDICT_DOMAIN, verdicts.AUDITED_TYPES, "Audited", msg)
    # Deterministic (RFC 6979) signing: the same bytes eth_account makes for this digest.
    assert bytes.fromhex(sig[2:]) == bytes(Account.unsafe_sign_hash(h, key.secret).signature)
    assert signing.recover(
        sig, verdicts.VERDICT_DOMAIN, verdicts.AUDITED_TYPES, "Audited", msg
    ) == (key.address)


def test_validator_and_trainer_start_without_eth_account() -> None:
    """The point of pot.eip712: these processes never pay for eth_account's import (nor the
    operator, which reads the miners' stakes without web3: operator/stakes.py)."""
    code = (
        "import sys, pot.validator.__main__, pot.trainer.segments, pot.operator.vset_reconciler,"
        " pot.operator.handlers, pot.operator.stakes;"
        "print(sorted(m for m in sys.modules"
        " if m.split('.')[0] in ('eth_account', 'py_ecc', 'web3')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
