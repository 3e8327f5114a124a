"""The miners' stakes on the settlement contract, read over JSON-RPC when a task is admitted.

R_i = pool x S_i P_i / sum S_j P_j takes ``spec.reward.minerStake`` as each miner's S_i,
and a rejected segment slashes the miner's stake on chain: a miner who never staked
would be paid like one who did, and cheat at no cost. So before a task is registered
with its validators and its gang released, every bound miner's active stake is read
from the ValidatorSet's chain (``checks.stake_check`` decides). Once, at admission: a
running task is never re-checked (the contract keeps unstaked stake slashable for
``withdrawalDelay``, which ``checks.lock_check`` compares with the task's deadline).

Three reads (eth_chainId, eth_getCode, eth_call) on ``receipts.rpc``, the operator's one
JSON-RPC client, and eth_utils' keccak: the operator pays for no web3 or eth_account
import (tests/test_eip712.py). The RPC URL may come from a Secret and carry an API key:
it is never logged or shown whole (``pot.settlement.redacting``). A failed check makes the task wait and is retried with
backoff (``Gate``): the stake may arrive later, the chain may come back.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from eth_utils import keccak

from pot import errors, urls
from pot.operator import checks, kubeapi
from pot.operator.config import Config
from pot.settlement import receipts

STAKES = "0x" + keccak(text="stakes(address)")[:4].hex()
WITHDRAWAL_DELAY = "0x" + keccak(text="withdrawalDelay()")[:4].hex()
RPC_URL_MISSING = "RpcUrlMissing"
CALL_FAILED = "ContractCallFailed"
RECHECK_MAX = 60.0
"""Seconds between two checks of a waiting task, at most (the backoff doubles up to it)."""


class Client:
    """The calls the check makes, on ``receipts.rpc`` (the operator's one JSON-RPC client,
    which classes a rate limit or a node's error as ChainUnreachable and only an
    ``eth_call`` revert as the contract's answer), run off the event loop."""

    def __init__(self, url: str, *, timeout: float) -> None:
        self.url = url
        self.timeout = timeout

    async def rpc(self, method: str, params: Sequence[Any]) -> Any:
        return await asyncio.to_thread(receipts.rpc, self.url, method, list(params), self.timeout)

    async def chain_id(self) -> int:
        return _int(await self.rpc("eth_chainId", []), "eth_chainId")

    async def has_code(self, address: str) -> bool:
        code = await self.rpc("eth_getCode", [address, "latest"])
        return bool(str(code or "0x").removeprefix("0x").strip("0"))

    async def call(self, to: str, data: str, what: str) -> list[int]:
        """``eth_call`` at the latest block: the answer's 32-byte words."""
        try:
            raw = str(await self.rpc("eth_call", [{"to": to, "data": data}, "latest"]) or "0x")
        except errors.ChainUnreachable:
            raise
        except errors.ChainError as exc:  # reverted: say what was asked of which contract
            raise errors.ChainError(f"{what} on {to}: {exc}") from exc
        raw = raw.removeprefix("0x")
        if not raw or len(raw) % 64:
            raise errors.ChainError(f"{what} on {to} returned {len(raw) // 2} bytes")
        try:
            return [int(raw[i : i + 64], 16) for i in range(0, len(raw), 64)]
        except ValueError:
            raise errors.ChainError(f"{what} on {to} returned no hex") from None

    async def stake(self, contract: str, account: str) -> checks.Stake:
        """``stakes(account)``: (amount, pending, unlockAt)."""
        word = account.lower().removeprefix("0x").rjust(64, "0")
        got = await self.call(contract, STAKES + word, f"stakes({account})")
        if len(got) < 3:
            raise errors.ChainError(f"stakes({account}) on {contract} returned {len(got)} words")
        return checks.Stake(amount=got[0], pending=got[1], unlock_at=got[2])

    async def withdrawal_delay(self, contract: str) -> int:
        return (await self.call(contract, WITHDRAWAL_DELAY, "withdrawalDelay()"))[0]


def _int(value: Any, what: str) -> int:
    try:
        return int(str(value), 16)
    except ValueError:
        raise errors.ChainError(f"{what} answered {str(value)[:40]!r}, not a number") from None


async def read(
    url: str, contract: str, accounts: Sequence[str], *, chain_id: int, timeout: float
) -> checks.ChainView:
    """What ``checks.stake_check`` needs: the chain id (and nothing more when it is not
    ``chain_id``), whether ``contract`` has code, its withdrawalDelay and the stakes."""
    client = Client(url, timeout=timeout)
    shown = urls.redact(url)
    got = await client.chain_id()
    if chain_id and got != chain_id:
        return checks.ChainView(url=shown, chain_id=got)
    if not await client.has_code(contract):
        return checks.ChainView(url=shown, chain_id=got, has_code=False)
    delay = await client.withdrawal_delay(contract)
    unique = sorted({a.lower() for a in accounts})
    found = await asyncio.gather(*(client.stake(contract, a) for a in unique))
    return checks.ChainView(
        url=shown,
        chain_id=got,
        withdrawal_delay=delay,
        stakes=dict(zip(unique, found, strict=True)),
    )


async def rpc_url(
    kube: kubeapi.Client, namespace: str, vset: str, chain: Mapping[str, Any], fallback: str
) -> str:
    """The ValidatorSet's RPC URL: ``rpcUrl``, the item ``rpcSecretRef`` names (read on
    demand, never kept or shown), or the operator's POT_CHAIN_RPC_URL. ConfigError
    names what is missing."""
    if chain.get("rpcUrl"):
        return str(chain["rpcUrl"])
    ref = chain.get("rpcSecretRef")
    if not ref:
        if fallback:
            return fallback
        raise errors.ConfigError(
            f'ValidatorSet "{vset}" spec.chain sets neither rpcUrl nor rpcSecretRef, and the '
            "operator has no POT_CHAIN_RPC_URL"
        )
    name, item = str(ref.get("name", "")), str(ref.get("key", ""))
    where = f'Secret "{name}" (ValidatorSet "{vset}" spec.chain.rpcSecretRef)'
    try:
        secret = await kube.get("v1", "secrets", namespace, name)
    except kubeapi.NotFound:
        raise errors.ConfigError(f'{where} not found in namespace "{namespace}"') from None
    text = (secret.get("stringData") or {}).get(item)
    if text is None and item in (secret.get("data") or {}):
        try:
            text = base64.b64decode(secret["data"][item]).decode()
        except (binascii.Error, ValueError):
            raise errors.ConfigError(f"{where} item {item!r} is not base64 text") from None
    if not text or not text.strip():
        raise errors.ConfigError(f"{where} has no item {item!r} (spec.chain.rpcSecretRef.key)")
    return text.strip()


async def check(
    kube: kubeapi.Client,
    cfg: Config,
    task: Mapping[str, Any],
    vset: Mapping[str, Any],
    miners: Mapping[int, str],
) -> checks.StakeCheck:
    """Read the chain and decide; a chain that cannot answer is a Problem, never raised."""
    meta, spec = vset["metadata"], vset.get("spec") or {}
    chain = spec.get("chain") or {}
    contract = str(chain.get("contract") or "")
    try:
        url = await rpc_url(kube, meta["namespace"], meta["name"], chain, cfg.chain_rpc_url)
    except errors.ConfigError as exc:
        why = f"{exc}: the miners' stakes cannot be checked"
        return checks.StakeCheck(checks.Problem(RPC_URL_MISSING, why, False))
    try:
        view = await read(
            url,
            contract,
            list(miners.values()),
            chain_id=int(chain.get("chainId") or 0),
            timeout=cfg.http_timeout,
        )
    except errors.ChainUnreachable as exc:
        why = f"{exc}; the miners' stakes are checked again with backoff"
        return checks.StakeCheck(checks.Problem(checks.CHAIN_UNREACHABLE, why, False))
    except errors.ChainError as exc:
        why = f"{exc}: is {contract} (spec.chain.contract) a PotSettlement?"
        return checks.StakeCheck(checks.Problem(CALL_FAILED, why, False))
    return checks.stake_check(task, chain, miners, view)


@dataclasses.dataclass(slots=True)
class _Waiting:
    inputs: tuple[Any, ...]
    failures: int
    due: float
    result: checks.StakeCheck


class Gate:
    """Checks tasks' stakes, remembering each waiting task's last answer: a task is
    reconciled on every pod or Secret event, but the chain is asked again only when
    the backoff (the poll interval, doubled per failure, up to RECHECK_MAX) is over, or
    when what is checked (the miners, the chain, the stake asked for) changed."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.waiting: dict[tuple[str, str], _Waiting] = {}

    def forget(self, key: tuple[str, str]) -> None:
        """The task was admitted or deleted."""
        self.waiting.pop(key, None)

    async def check(
        self,
        kube: kubeapi.Client,
        task: Mapping[str, Any],
        vset: Mapping[str, Any],
        miners: Mapping[int, str],
    ) -> checks.StakeCheck:
        meta = task["metadata"]
        key = (meta["namespace"], meta["name"])
        inputs = (
            meta.get("uid"),
            tuple(sorted(miners.items())),
            json.dumps((vset.get("spec") or {}).get("chain"), sort_keys=True),
            ((task.get("spec") or {}).get("reward") or {}).get("minerStake"),
        )
        now = time.monotonic()
        held = self.waiting.get(key)
        if held is not None and held.inputs != inputs:
            held = None
        if held is not None and now < held.due and held.result.problem is not None:
            problem = dataclasses.replace(held.result.problem, retry=held.due - now)
            return dataclasses.replace(held.result, problem=problem)
        result = await check(kube, self.config, task, vset, miners)
        if result.problem is None:
            self.forget(key)
            return result
        failures = held.failures + 1 if held is not None else 1
        delay = min(self.config.poll_interval * 2 ** min(failures - 1, 16), RECHECK_MAX)
        self.waiting[key] = _Waiting(inputs, failures, time.monotonic() + delay, result)
        return dataclasses.replace(result, problem=dataclasses.replace(result.problem, retry=delay))
