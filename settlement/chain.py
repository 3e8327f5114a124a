"""The one place web3 is called from: connection, retries and error wrapping.

STYLE "wrap what you don't own": web3, requests and the node's JSON-RPC errors become
``pot.errors.ChainUnreachable`` (retried here with backoff: an RPC that blips must not crash
a sidecar) or ``ChainError``; a contract revert becomes ``Reverted`` carrying the custom
error's *name* decoded from the ABI, so callers branch on ``AlreadySettled`` rather than on
message text.

What counts as unreachable: any transport failure of ``requests`` (refused, timeout, reset,
an unreadable body) and the HTTP statuses a busy or restarting endpoint answers with
(``RETRY_STATUSES``: 408, 425, 429 and every 5xx; hosted providers rate-limit with 429).
Any other 4xx (401, 403, 404: a wrong or expired API key, a wrong path) is a ``ChainError``
right away: repeating the same request cannot fix it. The sidecar's loop logs it each turn
and stays up rather than crash-looping on what may be a provider's passing refusal. web3's
own retry of HTTP errors is switched off so that this is the one retry policy.

The URL is never shown whole (it may hold an API key): messages name ``urls.redact(url)``
and exception texts pass through ``redacting.scrub``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from eth_abi import abi as eth_abi
from eth_utils import keccak, to_checksum_address
from web3 import Web3
from web3 import exceptions as w3x

from pot import errors, keys, urls
from pot.settlement import redacting

log = logging.getLogger(__name__)

T = TypeVar("T")

# HTTP statuses of an endpoint that is busy or restarting, not misconfigured: retried.
RETRY_STATUSES = frozenset({408, 425, 429})


BLOCK_GAS = 30_000_000
"""Gas of a full Ethereum block: no one-off transaction here needs more."""


class Reverted(errors.ChainError):
    """A contract call or transaction reverted; ``name`` is the custom error ('' if unknown)."""

    def __init__(self, message: str, *, name: str = "", args: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.name = name
        self.error_args = args


def error_table(abi: Sequence[Mapping[str, Any]]) -> dict[bytes, tuple[str, list[str]]]:
    """4-byte selector → (error name, argument types) for every ``error`` in ``abi``."""
    table = {}
    for item in abi:
        if item.get("type") != "error":
            continue
        types = [i["type"] for i in item.get("inputs", [])]
        selector = keccak(text=f"{item['name']}({','.join(types)})")[:4]
        table[bytes(selector)] = (item["name"], types)
    return table


def decode_revert(
    data: bytes | str | None, abi: Sequence[Mapping[str, Any]]
) -> tuple[str, tuple[Any, ...]]:
    """``(name, args)`` of a custom error's revert data; ``("", ())`` if not in the ABI."""
    if isinstance(data, str):
        data = bytes.fromhex(data.removeprefix("0x")) if data.startswith("0x") else b""
    if not data or len(data) < 4:
        return "", ()
    found = error_table(abi).get(data[:4])
    if found is None:
        return "", ()
    name, types = found
    try:
        return name, tuple(eth_abi.decode(types, data[4:]))
    except Exception:  # noqa: BLE001 (eth_abi raises several decoding errors)
        return name, ()


def _revert_data(exc: BaseException) -> str | None:
    data = getattr(exc, "data", None)
    if isinstance(data, str):
        return data
    if isinstance(data, dict):  # some nodes nest it
        inner = data.get("data")
        return inner if isinstance(inner, str) else None
    return None


def retryable(status: int) -> bool:
    """Whether an HTTP status from the RPC endpoint means "try again later"."""
    return status in RETRY_STATUSES or status >= 500


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None) if isinstance(exc, requests.HTTPError) else None
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


@dataclass(kw_only=True)
class Chain:
    """A connection to an EVM JSON-RPC endpoint."""

    url: str
    retries: int = 5
    """Attempts for a call whose endpoint does not answer."""
    backoff: float = 0.2
    """First retry delay in seconds; doubles each time."""
    timeout: float = 10.0

    def __post_init__(self) -> None:
        self.w3 = Web3(
            Web3.HTTPProvider(
                self.url,
                request_kwargs={"timeout": self.timeout},
                exception_retry_configuration=None,  # Chain.call is the one retry policy
            )
        )
        self._chain_id: int | None = None

    @property
    def shown(self) -> str:
        """The URL as logs and errors may show it (scheme, host and port only)."""
        return urls.redact(self.url)

    def _scrub(self, exc: BaseException) -> str:
        return redacting.scrub(str(exc), self.url)

    def call(
        self,
        what: str,
        fn: Callable[[], T],
        *,
        abi: Sequence[Mapping[str, Any]] = (),
        retry: bool = True,
    ) -> T:
        """Run ``fn`` (a web3 call), wrapping its errors; retries while the RPC is unreachable."""
        delay = self.backoff
        attempts = self.retries if retry else 1
        for attempt in range(attempts):
            try:
                return fn()
            except (requests.RequestException, w3x.ProviderConnectionError) as exc:
                status = _http_status(exc)
                if status is not None and not retryable(status):
                    raise errors.ChainError(
                        f"chain RPC {self.shown} ({what}): HTTP {status} "
                        "(check the RPC URL and its API key: --rpc-url, POT_CHAIN_RPC_URL "
                        "or peers.json chain.rpcUrl)"
                    ) from exc
                why = f"HTTP {status}" if status is not None else self._scrub(exc)
                if attempt + 1 >= attempts:
                    raise errors.ChainUnreachable(
                        f"chain RPC {self.shown} ({what}) unreachable: {why}"
                    ) from exc
                log.warning(
                    "chain RPC %s unreachable (%s: %s), retrying in %.1fs",
                    self.shown,
                    what,
                    why,
                    delay,
                )
                time.sleep(delay)
                delay *= 2
            except w3x.ContractLogicError as exc:
                data = _revert_data(exc)
                name, args = decode_revert(data, abi)
                label = name or self._scrub(exc)
                raise Reverted(
                    f"{what} reverted: {label}{args if args else ''}", name=name, args=args
                ) from exc
            except w3x.Web3RPCError as exc:
                raise errors.ChainError(
                    f"chain RPC {self.shown} ({what}): {self._scrub(exc)}"
                ) from exc
            except (w3x.Web3Exception, ValueError) as exc:
                raise errors.ChainError(f"{what}: {self._scrub(exc)}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    @property
    def chain_id(self) -> int:
        """The chain id (cached: it never changes under a running node)."""
        if self._chain_id is None:
            self._chain_id = int(self.call("eth_chainId", lambda: self.w3.eth.chain_id))
        return self._chain_id

    def fees(self) -> tuple[int, int]:
        """``(maxFeePerGas, maxPriorityFeePerGas)`` for a transaction now (EIP-1559)."""

        def get() -> tuple[int, int]:
            block = self.w3.eth.get_block("latest")
            base = int(block.get("baseFeePerGas", 0) or 0)
            tip = int(self.w3.eth.max_priority_fee)
            # Two base fees of headroom: the fee survives six full blocks of base-fee growth.
            return 2 * base + tip, tip

        return self.call("fees", get)

    @staticmethod
    def _short(key: keys.Key, what: str, balance: int, value: int, fee: int = 0) -> str:
        gas = f"up to {fee} wei of gas" if fee else "gas"
        sends = f"{value} wei plus {gas}" if value else gas
        return (
            f"{what}: {key.source} is account {key.address}, which holds {balance} wei; "
            f"it needs {sends}"
        )

    def transact(
        self,
        key: keys.Key,
        fn: Any,
        *,
        abi: Sequence[Mapping[str, Any]] = (),
        value: int = 0,
        what: str = "transaction",
    ) -> Any:
        """Sign ``fn`` (a bound contract function or constructor) with ``key``, send, wait.

        For one-off administrative transactions (deploy, fund, withdraw). The sidecar uses
        ``pot.settlement.sending`` instead, which keeps an intent log.
        """
        address = key.address
        max_fee, tip = self.fees()
        params = {"from": address, "value": value, "chainId": self.chain_id}
        # Checked first: a node refuses the estimate of an unaffordable transaction in its
        # own words (eth-tester's name the sender as raw bytes), never naming the key.
        balance = self.call(
            "balance", lambda: int(self.w3.eth.get_balance(to_checksum_address(address)))
        )
        if balance <= value:
            raise errors.ChainError(self._short(key, what, balance, value))
        try:
            gas = self.call(f"{what} (estimate)", lambda: fn.estimate_gas(params), abi=abi)
        except (Reverted, errors.ChainUnreachable):
            raise
        except errors.ChainError as exc:
            # Nodes refuse to estimate what the sender cannot pay for, each in its own words.
            if balance < value + BLOCK_GAS * max_fee:
                raise errors.ChainError(
                    self._short(key, what, balance, value) + " (the node refused the estimate)"
                ) from exc
            raise
        if balance < value + gas * max_fee:
            raise errors.ChainError(self._short(key, what, balance, value, gas * max_fee))
        nonce = self.call(
            "nonce",
            lambda: self.w3.eth.get_transaction_count(to_checksum_address(address), "pending"),
        )
        tx = fn.build_transaction(
            {
                **params,
                "gas": int(gas * 1.2) + 10_000,
                "nonce": nonce,
                "maxFeePerGas": max_fee,
                "maxPriorityFeePerGas": tip,
            }
        )
        raw = key.account.sign_transaction(tx).raw_transaction
        tx_hash = self.call(what, lambda: self.w3.eth.send_raw_transaction(raw), abi=abi)
        receipt = self.call(
            f"{what} (receipt)",
            lambda: self.w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=60, poll_latency=0.05
            ),
        )
        if receipt["status"] != 1:
            raise Reverted(f"{what} reverted on chain (tx {tx_hash.hex()})")
        return receipt
