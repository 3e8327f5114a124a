"""The settlement receipt of a task, read straight from the chain's event logs.

The operator mirrors "settled in transaction X, paying Y" into a
TrainingTask's status (DESIGN §4.6). It must not take a validator's word for
that: it reads the contract's own events (``Settled`` and the ``Credited``
events of the same transaction) over plain JSON-RPC. Only urllib and
eth_utils are used, so the operator image needs no web3. The RPC URL may hold an API key
(``chain.rpcSecretRef``): errors name it redacted.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from eth_utils import keccak, to_checksum_address

from pot import errors, ids, urls
from pot.settlement import redacting

SETTLED = "0x" + keccak(text="Settled(bytes32,uint256,uint256,uint256,bool,address)").hex()
CREDITED = "0x" + keccak(text="Credited(bytes32,address,uint256)").hex()
SLASHED = "0x" + keccak(text="Slashed(bytes32,address,uint256,uint256)").hex()


RATE_LIMITED = (-32005, 429)
"""JSON-RPC error codes of a request refused for now: EIP-1474's "limit exceeded", and
the HTTP status some hosted endpoints put in the error object."""


def rpc(url: str, method: str, params: list[Any], timeout: float) -> Any:
    """One JSON-RPC call, the operator's one client (receipts, ``ChainReachable``, the
    miners' stakes). ChainError when ``eth_call`` is refused (the contract's answer: a
    revert); ChainUnreachable when the endpoint cannot be asked or refuses for now (an
    HTTP error, no JSON-RPC answer, a rate limit, an error to any other method), which
    callers retry with backoff. The URL may carry an API key: messages show it redacted."""
    shown = urls.redact(url)
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (the chain's RPC URL)
            doc = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the response, and with it the connection
        raise errors.ChainUnreachable(f"chain RPC {shown} unreachable: HTTP {exc.code}") from exc
    except ValueError as exc:
        raise errors.ChainUnreachable(
            f"chain RPC {shown} unreachable: not a JSON-RPC answer ({exc})"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        why = redacting.scrub(str(exc) or type(exc).__name__, url)
        raise errors.ChainUnreachable(f"chain RPC {shown} unreachable: {why}") from exc
    if not isinstance(doc, dict):
        raise errors.ChainUnreachable(f"chain RPC {shown} unreachable: not a JSON-RPC answer")
    err = doc.get("error")
    if err is not None:
        message = err.get("message") if isinstance(err, dict) else err
        code = err.get("code") if isinstance(err, dict) else None
        said = redacting.scrub(
            f"{method}: {message}" + (f" (code {code})" if code is not None else ""), url
        )
        if method != "eth_call" or code in RATE_LIMITED or "rate limit" in str(message).lower():
            raise errors.ChainUnreachable(f"chain RPC {shown} unreachable: {said}")
        raise errors.ChainError(f"chain RPC {shown} {said}")
    return doc.get("result")


def chain_id(rpc_url: str, *, timeout: float = 5.0) -> int:
    """``eth_chainId`` of the RPC endpoint; ChainUnreachable when it does not answer."""
    return int(rpc(rpc_url, "eth_chainId", [], timeout), 16)


def _word(data: str, i: int) -> int:
    raw = data.removeprefix("0x")
    return int(raw[64 * i : 64 * (i + 1)], 16)


def find(
    rpc_url: str,
    contract: str,
    task: str,
    round_: int = 0,
    *,
    validators: set[str] | None = None,
    timeout: float = 5.0,
) -> dict[str, Any] | None:
    """``{txHash, block, payouts: [{address, amount, role}], slashed}`` or None if not settled.

    ``validators`` (addresses) marks payees as ``validator``; others are ``miner``.
    ChainUnreachable / ChainError when the chain cannot answer.
    """
    task_topic = "0x" + ids.chain_task_id(task).hex()
    round_topic = "0x" + round_.to_bytes(32, "big").hex()
    base = {"address": to_checksum_address(contract), "fromBlock": "0x0", "toBlock": "latest"}
    settled = rpc(
        rpc_url, "eth_getLogs", [{**base, "topics": [SETTLED, task_topic, round_topic]}], timeout
    )
    if not settled:
        return None
    event = settled[-1]
    tx, block = event["transactionHash"], int(event["blockNumber"], 16)
    lower = {v.lower() for v in validators or set()}
    payouts = []
    for log in rpc(rpc_url, "eth_getLogs", [{**base, "topics": [CREDITED, task_topic]}], timeout):
        if log["transactionHash"] != tx:
            continue
        account = to_checksum_address("0x" + log["topics"][2][-40:])
        payouts.append(
            {
                "address": account,
                "amount": str(_word(log["data"], 0)),
                "role": "validator" if account.lower() in lower else "miner",
            }
        )
    slashed = {}
    for log in rpc(rpc_url, "eth_getLogs", [{**base, "topics": [SLASHED, task_topic]}], timeout):
        if log["transactionHash"] == tx:
            slashed[to_checksum_address("0x" + log["topics"][2][-40:])] = str(_word(log["data"], 1))
    return {"txHash": tx, "block": block, "payouts": payouts, "slashed": slashed}
