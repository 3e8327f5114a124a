"""The Allocation typed data: the one definition validators sign and the contract checks.

docs/protocol.md "Allocation". This module is THE source of the EIP-712 ``Allocation``
type: validators (``pot.validator``) import ``sign`` to sign what their replicated state
machine computed; the settlement sidecar imports ``parse`` and ``quorum`` to turn the
validators' JSON into ``settle(...)`` arguments; ``contracts/PotSettlement.sol`` hashes the
same struct (``ALLOCATION_TYPEHASH``), and a test checks both digests agree.

Pure: no web3, no aiohttp (import-linter contract in pyproject.toml), so the validators'
core can use it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from eth_utils import is_address, to_checksum_address

from pot import errors, ids, keys, signing

PRIMARY_TYPE = "Allocation"
TYPES: dict[str, list[dict[str, str]]] = {
    "Allocation": [
        {"name": "taskId", "type": "bytes32"},
        {"name": "round", "type": "uint256"},
        {"name": "payees", "type": "address[]"},
        {"name": "amounts", "type": "uint256[]"},
        {"name": "slashed", "type": "address[]"},
        {"name": "slashAmounts", "type": "uint256[]"},
        {"name": "targetMet", "type": "bool"},
        {"name": "token", "type": "address"},
    ]
}
# The type string the contract hashes into ALLOCATION_TYPEHASH (EIP-712 §encodeType).
TYPE_STRING = (
    "Allocation(" + ",".join(f"{f['type']} {f['name']}" for f in TYPES["Allocation"]) + ")"
)

UINT256_MAX = 2**256 - 1
NATIVE = "0x" + "00" * 20
"""``token`` of an allocation paid in the chain's own currency (ETH)."""


class Rejection(enum.Enum):
    """Why a signature from the validators' allocation JSON is not used (one line each)."""

    MALFORMED = "malformed"  # not 65 bytes of hex, or does not recover
    WRONG_SIGNER = "wrong_signer"  # recovers to an address other than the claimed signer
    UNREGISTERED = "unregistered"  # the signer is not in the validator set
    DUPLICATE = "duplicate"  # a second signature of the same signer


@dataclass(frozen=True, slots=True, kw_only=True)
class Allocation:
    """What the validators agreed to pay for one (task, round)."""

    task: str
    """Off-chain task id ``<namespace>/<name>``."""
    round: int
    payees: tuple[str, ...]
    """Checksummed addresses, in the order the validators computed (the contract keeps it)."""
    amounts: tuple[int, ...]
    """Wei, one per payee."""
    slashed: tuple[str, ...] = ()
    slash_amounts: tuple[int, ...] = ()
    target_met: bool = True
    """Bounty gate: False refunds the amounts to the funder instead of paying them."""
    token: str = NATIVE
    """What the amounts are in: the task's ``reward.token`` (checksummed), NATIVE for ETH.
    Signed, so only an escrow in this token can pay (the contract's TokenMismatch)."""

    def __post_init__(self) -> None:
        ids.split_task_key(self.task)
        if not is_address(self.token):
            raise errors.ProtocolError(f"allocation token {self.token!r} is not an address")
        if self.round < 0 or self.round > UINT256_MAX:
            raise errors.ProtocolError(f"allocation round {self.round} out of range")
        if len(self.payees) != len(self.amounts):
            raise errors.ProtocolError("allocation payees and amounts differ in length")
        if len(self.slashed) != len(self.slash_amounts):
            raise errors.ProtocolError("allocation slashed and slashAmounts differ in length")
        for a in (*self.amounts, *self.slash_amounts):
            if not 0 <= a <= UINT256_MAX:
                raise errors.ProtocolError(f"allocation amount {a} out of uint256 range")

    @property
    def task_id(self) -> bytes:
        """bytes32 ``keccak256(task)`` (``pot.ids.chain_task_id``)."""
        return ids.chain_task_id(self.task)

    @property
    def total(self) -> int:
        """Sum of the amounts (what leaves the escrow)."""
        return sum(self.amounts)

    def message(self) -> dict[str, Any]:
        """The EIP-712 message (field names as in ``TYPES``)."""
        return {
            "taskId": self.task_id,
            "round": self.round,
            "payees": list(self.payees),
            "amounts": list(self.amounts),
            "slashed": list(self.slashed),
            "slashAmounts": list(self.slash_amounts),
            "targetMet": self.target_met,
            "token": self.token,
        }

    def settle_args(self, signatures: Sequence[bytes], funder: str) -> tuple[Any, ...]:
        """Arguments of ``settle(...)`` in ABI order (docs/protocol.md); ``funder``: whose
        escrow for the task pays."""
        return (
            self.task_id,
            self.round,
            list(self.payees),
            list(self.amounts),
            list(self.slashed),
            list(self.slash_amounts),
            self.target_met,
            list(signatures),
            to_checksum_address(funder),
            self.token,
        )


def digest(alloc: Allocation, chain_id: int, contract: str) -> bytes:
    """The 32-byte EIP-712 digest the contract recovers signers from."""
    return signing.digest(signing.domain(chain_id, contract), TYPES, PRIMARY_TYPE, alloc.message())


def sign(key: keys.Key, alloc: Allocation, chain_id: int, contract: str) -> str:
    """A validator's signature (0x-hex, 65 bytes r‖s‖v)."""
    return signing.sign(
        key, signing.domain(chain_id, contract), TYPES, PRIMARY_TYPE, alloc.message()
    )


def recover(signature: str, alloc: Allocation, chain_id: int, contract: str) -> str:
    """The signer's checksummed address; ProtocolError if malformed."""
    return signing.recover(
        signature, signing.domain(chain_id, contract), TYPES, PRIMARY_TYPE, alloc.message()
    )


def _address(value: Any, field: str) -> str:
    if not isinstance(value, str) or not is_address(value):
        raise errors.ProtocolError(f"allocation {field}: {value!r} is not an address")
    return str(to_checksum_address(value))


def is_wei(value: Any) -> TypeGuard[str]:
    """Whether ``value`` is an amount as the protocol writes one: a string of ASCII digits.
    ``str.isdigit`` alone takes other scripts' digits too: ``int`` reads "١٢" as 12 and
    raises ValueError on "²"."""
    return isinstance(value, str) and value.isascii() and value.isdigit()


def _wei(value: Any, field: str) -> int:
    # Amounts travel as decimal strings (docs/protocol.md): JSON numbers lose precision.
    if not is_wei(value):
        raise errors.ProtocolError(f"allocation {field}: {value!r} is not a decimal wei string")
    return int(value)


def parse(doc: Mapping[str, Any]) -> tuple[Allocation, list[tuple[str, str]]]:
    """The allocation and its ``(signer, signature)`` pairs from the validators' JSON.

    ProtocolError names the field at fault. ``taskId``, when present, must match the task.
    """
    try:
        alloc = Allocation(
            task=str(doc["task"]),
            round=int(doc["round"]),
            payees=tuple(_address(p, "payees") for p in doc["payees"]),
            amounts=tuple(_wei(a, "amounts") for a in doc["amounts"]),
            slashed=tuple(_address(p, "slashed") for p in doc.get("slashed", [])),
            slash_amounts=tuple(_wei(a, "slashAmounts") for a in doc.get("slashAmounts", [])),
            target_met=bool(doc.get("targetMet", True)),
            token=_address(doc.get("token", NATIVE), "token"),
        )
    except KeyError as exc:
        raise errors.ProtocolError(f"allocation: missing field {exc.args[0]!r}") from None
    except (TypeError, ValueError, errors.ConfigError) as exc:
        raise errors.ProtocolError(f"allocation: {exc}") from exc
    claimed = doc.get("taskId")
    if claimed is not None and str(claimed).lower() != "0x" + alloc.task_id.hex():
        raise errors.ProtocolError("allocation taskId does not match keccak256(task)")
    sigs = []
    for entry in doc.get("signatures", []):
        if not isinstance(entry, Mapping):
            raise errors.ProtocolError("allocation signatures: entries must be objects")
        sigs.append((str(entry.get("signer", "")), str(entry.get("signature", ""))))
    return alloc, sigs


def to_json(alloc: Allocation, *, chain_id: int, contract: str, quorum: int) -> dict[str, Any]:
    """The validators' allocation JSON without signatures (docs/protocol.md)."""
    return {
        "task": alloc.task,
        "taskId": "0x" + alloc.task_id.hex(),
        "round": alloc.round,
        "payees": list(alloc.payees),
        "amounts": [str(a) for a in alloc.amounts],
        "slashed": list(alloc.slashed),
        "slashAmounts": [str(a) for a in alloc.slash_amounts],
        "targetMet": alloc.target_met,
        "token": alloc.token,
        "chainId": chain_id,
        "contract": to_checksum_address(contract),
        "digest": "0x" + digest(alloc, chain_id, contract).hex(),
        "quorum": quorum,
        "signatures": [],
    }


def quorum(
    alloc: Allocation,
    signatures: Iterable[tuple[str, str]],
    *,
    chain_id: int,
    contract: str,
    registered: Iterable[str],
    threshold: int,
) -> tuple[list[bytes], dict[str, Rejection]]:
    """The signatures to submit, ascending by signer, and why others were dropped.

    The contract wants signers sorted ascending and unique (that makes its uniqueness check
    O(1) per signature); we submit exactly ``threshold`` of them because every extra one costs
    an ecrecover. Returns fewer than ``threshold`` when the set is short: the caller waits.
    """
    members = {to_checksum_address(a) for a in registered}
    good: dict[str, bytes] = {}
    dropped: dict[str, Rejection] = {}
    for claimed, sig in signatures:
        try:
            signer = recover(sig, alloc, chain_id, contract)
        except errors.ProtocolError:
            dropped[claimed] = Rejection.MALFORMED
            continue
        if claimed and claimed.lower() != signer.lower():
            dropped[claimed] = Rejection.WRONG_SIGNER
        elif signer not in members:
            dropped[signer] = Rejection.UNREGISTERED
        elif signer in good:
            dropped[signer] = Rejection.DUPLICATE
        else:
            good[signer] = bytes.fromhex(sig.removeprefix("0x"))
    # Ascending by the address as a number (the contract compares `address` values).
    ordered = sorted(good, key=lambda a: int(a, 16))
    return [good[a] for a in ordered[:threshold]], dropped
