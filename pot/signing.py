"""EIP-712 typed-data signatures, shared by segments, allocations and the contract.

Miners sign proof segments and validators sign allocations as EIP-712 typed
data, so the same signature is checked by Python peers and by the settlement
contract (``ecrecover`` over the same digest). The domain binds every
signature to one chain and one contract: a signature made for another chainId
or deployment recovers to a different address and is refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from eth_keys.datatypes import Signature
from eth_utils import keccak, to_checksum_address

from pot import eip712, errors, keys

DOMAIN_NAME = "pot"
DOMAIN_VERSION = "1"

Types = Mapping[str, list[dict[str, str]]]

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
"""The order of secp256k1's group: a signature's s and n - s both verify; only s <= n/2 is
canonical (EIP-2; OpenZeppelin's ECDSA refuses the other)."""


def domain(chain_id: int, contract: str) -> dict[str, Any]:
    """The EIP-712 domain of a pot deployment."""
    return {
        "name": DOMAIN_NAME,
        "version": DOMAIN_VERSION,
        "chainId": int(chain_id),
        "verifyingContract": to_checksum_address(contract),
    }


def offchain_domain(purpose: str) -> dict[str, Any]:
    """A domain for signatures never checked on chain (e.g. proof segments)."""
    return {"name": f"{DOMAIN_NAME}-{purpose}", "version": DOMAIN_VERSION}


def digest(
    domain_data: Mapping[str, Any], types: Types, primary: str, message: Mapping[str, Any]
) -> bytes:
    """The 32-byte EIP-712 digest (keccak256(0x1901 ‖ domainSeparator ‖ structHash))."""
    return eip712.digest(domain_data, types, primary, message)


def sign(
    key: keys.Key,
    domain_data: Mapping[str, Any],
    types: Types,
    primary: str,
    message: Mapping[str, Any],
) -> str:
    """A 65-byte signature (r ‖ s ‖ v, v in {27, 28}, low s) as 0x-hex."""
    sig = key.private.sign_msg_hash(eip712.digest(domain_data, types, primary, message))
    return (
        "0x"
        + sig.r.to_bytes(32, "big").hex()
        + sig.s.to_bytes(32, "big").hex()
        + f"{sig.v + 27:02x}"
    )


def recover(
    signature: str,
    domain_data: Mapping[str, Any],
    types: Types,
    primary: str,
    message: Mapping[str, Any],
) -> str:
    """The checksummed address that made ``signature``; ProtocolError if malformed.

    Only canonical signatures are accepted: v of 27 or 28 and s in the lower half of the
    curve order, as the settlement contract's ECDSA check wants. A bare recovery would also
    take v = 0/1 and high-s forms; the contract refuses them, so a replica that stored
    one (each replica keeps a peer's first allocation signature) would hand every sidecar a
    quorum that can never settle.
    """
    try:
        raw = bytes.fromhex(signature.removeprefix("0x"))
    except (ValueError, AttributeError) as exc:
        raise errors.ProtocolError("signature is not hex") from exc
    if len(raw) != 65:
        raise errors.ProtocolError(f"signature must be 65 bytes, got {len(raw)}")
    if raw[64] not in (27, 28):
        raise errors.ProtocolError(f"signature v must be 27 or 28, got {raw[64]}")
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big")
    if not 0 < r < SECP256K1_N or not 0 < s <= SECP256K1_N // 2:
        raise errors.ProtocolError("signature is not canonical (r or s out of range, or high s)")
    try:
        h = eip712.digest(domain_data, types, primary, message)
    except (ValueError, TypeError, KeyError) as exc:
        raise errors.ProtocolError(f"signed message is malformed: {exc}") from exc
    try:
        public = Signature(vrs=(raw[64] - 27, r, s)).recover_public_key_from_msg_hash(h)
    except Exception as exc:  # the library's errors for points off the curve vary by backend
        raise errors.ProtocolError(f"signature does not recover: {exc}") from exc
    return str(public.to_checksum_address())


# ---------------------------------------------------------------------- task registrations

REGISTER_TYPES: Types = {
    "Register": [
        {"name": "task", "type": "string"},
        {"name": "uid", "type": "string"},
        {"name": "specHash", "type": "bytes32"},
        {"name": "miners", "type": "address[]"},
    ]
}
"""What the operator signs when it registers a task with a ValidatorSet (docs/protocol.md):
the task, the uid of the TrainingTask object behind it (so a later object under the same
name is told apart), its spec, and the miner address of each node rank (empty: not bound)."""


def spec_hash(spec: Any) -> bytes:
    """keccak256 of the spec's canonical JSON (sorted keys, no spaces, UTF-8)."""
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return bytes(keccak(text.encode()))


def _registration(task: str, spec: Any, miners: Sequence[str], uid: str) -> dict[str, Any]:
    return {"task": task, "uid": uid, "specHash": spec_hash(spec), "miners": list(miners)}


def sign_registration(
    key: keys.Key, task: str, spec: Any, miners: Sequence[str] = (), uid: str = ""
) -> str:
    """The operator's signature over ``Register{task, uid, specHash, miners}``."""
    message = _registration(task, spec, miners, uid)
    return sign(key, offchain_domain("register"), REGISTER_TYPES, "Register", message)


def registration_signer(
    signature: str, task: str, spec: Any, miners: Sequence[str] = (), uid: str = ""
) -> str:
    """Who signed this registration; ProtocolError if the signature (or a miner address) is
    malformed."""
    message = _registration(task, spec, miners, uid)
    return recover(signature, offchain_domain("register"), REGISTER_TYPES, "Register", message)
