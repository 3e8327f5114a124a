"""Compiled contract artifacts and deployment.

The artifacts under ``contracts/artifacts`` are checked in (``pot.settlement.compiling``
writes them; a test fails on drift), so deploying needs no compiler at run time.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eth_utils import to_checksum_address
from web3.contract import Contract

from pot import errors, keys
from pot.settlement import chain as chaining

ARTIFACTS = Path(__file__).resolve().parent.parent / "contracts" / "artifacts"
SETTLEMENT = "PotSettlement"


@functools.cache
def artifact(name: str) -> dict[str, Any]:
    """The artifact ``contracts/artifacts/NAME.json`` (abi, bytecode, compiler)."""
    path = ARTIFACTS / f"{name}.json"
    try:
        doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise errors.ChainError(f"no contract artifact {path}") from None
    return doc


def abi(name: str = SETTLEMENT) -> list[dict[str, Any]]:
    """The ABI of a contract."""
    return list(artifact(name)["abi"])


ERC20_ABI: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": name,
        "stateMutability": mutability,
        "inputs": [{"name": n, "type": t} for n, t in inputs],
        "outputs": [{"name": "", "type": out}],
    }
    for name, mutability, inputs, out in (
        ("balanceOf", "view", (("account", "address"),), "uint256"),
        ("allowance", "view", (("owner", "address"), ("spender", "address")), "uint256"),
        ("approve", "nonpayable", (("spender", "address"), ("amount", "uint256")), "bool"),
    )
]
"""The three ERC-20 functions escrowing a token needs (EIP-20), for any token's address."""


def erc20(chain: chaining.Chain, address: str) -> Contract:
    """A web3 contract object for the ERC-20 token at ``address``."""
    return chain.w3.eth.contract(address=to_checksum_address(address), abi=ERC20_ABI)


def at(chain: chaining.Chain, address: str, name: str = SETTLEMENT) -> Contract:
    """A web3 contract object bound to a deployed ``address``."""
    return chain.w3.eth.contract(address=to_checksum_address(address), abi=abi(name))


def deploy(chain: chaining.Chain, key: keys.Key, name: str, *args: Any, value: int = 0) -> str:
    """Deploy contract ``name`` with constructor ``args``; returns its checksummed address."""
    art = artifact(name)
    factory = chain.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    receipt = chain.transact(
        key, factory.constructor(*args), abi=art["abi"], value=value, what=f"deploy {name}"
    )
    return str(receipt["contractAddress"])


def deploy_settlement(
    chain: chaining.Chain,
    key: keys.Key,
    validators: Sequence[str],
    *,
    threshold: int | None = None,
    withdrawal_delay: int = 7 * 24 * 3600,
) -> str:
    """Deploy PotSettlement with a validator set; threshold defaults to 2f+1 (f = (n-1)//3)."""
    vs = [to_checksum_address(v) for v in validators]
    if threshold is None:
        threshold = quorum_threshold(len(vs))
    return deploy(chain, key, SETTLEMENT, vs, threshold, withdrawal_delay)


def quorum_threshold(n: int) -> int:
    """2f+1 for n replicas (PBFT: n >= 3f+1)."""
    if n < 1:
        raise errors.ConfigError("a validator set needs at least one address")
    return 2 * ((n - 1) // 3) + 1
