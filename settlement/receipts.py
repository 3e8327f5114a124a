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


def _rpc(url: str, method: str, params: list[Any], timeout: float) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (the chain's RPC URL)
            doc = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the response, and with it the connection
        raise errors.ChainUnreachable(
            f"chain RPC {urls.redact(url)} unreachable: HTTP {exc.code}"
        ) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise errors.ChainUnreachable(
            f"chain RPC {urls.redact(url)} unreachable: {redacting.scrub(str(exc), url)}"
        ) from exc
    if "error" in doc:
        message = redacting.scrub(str(doc["error"].get("message")), url)
        raise errors.ChainError(f"chain RPC {urls.redact(url)} {method}: {message}")
    return doc.get("result")


def chain_id(rpc_url: str, *, timeout: float = 5.0) -> int:
    """``eth_chainId`` of the RPC endpoint; ChainUnreachable when it does not answer."""
    return int(_rpc(rpc_url, "eth_chainId", [], timeout), 16)


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
    settled = _rpc(
        rpc_url, "eth_getLogs", [{**base, "topics": [SETTLED, task_topic, round_topic]}], timeout
    )
    if not settled:
        return None
    event = settled[-1]
    tx, block = event["transactionHash"], int(event["blockNumber"], 16)
    lower = {v.lower() for v in validators or set()}
    payouts = []
    for log in _rpc(rpc_url, "eth_getLogs", [{**base, "topics": [CREDITED, task_topic]}], timeout):
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
    for log in _rpc(rpc_url, "eth_getLogs", [{**base, "topics": [SLASHED, task_topic]}], timeout):
        if log["transactionHash"] == tx:
            slashed[to_checksum_address("0x" + log["topics"][2][-40:])] = str(_word(log["data"], 1))
    return {"txHash": tx, "block": block, "payouts": payouts, "slashed": slashed}
