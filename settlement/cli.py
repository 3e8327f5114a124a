"""``pot chain``: deploy the settlement contract, fund tasks, stake, withdraw, read balances,
run a dev chain.

Output is JSON on stdout (the demo and the chart read it). Keys come from files only
(``pot.keys``); errors users can cause are ``pot.errors`` and print as one line.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import typer

from pot import errors

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)


def _check_rpc(url: str) -> str:
    from pot import urls

    if url.split("://", 1)[0].lower() not in ("http", "https"):
        raise typer.BadParameter(f"{urls.redact(url)} is not an http(s) URL")
    return url


def _shown(value: str) -> str:
    """``value`` quoted for an error, unless it is longer than an address (0x and 40 hex
    digits) and so could be a private key, or most of one: a key pasted where an address
    belongs must not end up on screen or in a CI log."""
    if len(value.strip()) > 42:
        return f"a {len(value.strip())}-character value (not shown: it may be a key)"
    return repr(value)


def _check_address(address: str) -> str:
    from eth_utils import is_address, to_checksum_address

    if not is_address(address):
        raise typer.BadParameter(f"{_shown(address)} is not an address (0x and 40 hex digits)")
    return str(to_checksum_address(address))


def _check_uint256(value: int) -> int:
    if value >= 2**256:
        raise typer.BadParameter("must be below 2**256 (the contract's uint256)")
    return value


def _check_task(task: str) -> str:
    from pot import ids

    try:
        return ids.check_task_key(task)
    except errors.ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


# The sidecar's spelling (--rpc-url, POT_CHAIN_RPC_URL) works here too.
RPC = typer.Option(
    ...,
    "--rpc",
    "--rpc-url",
    envvar=["POT_CHAIN_RPC", "POT_CHAIN_RPC_URL"],
    callback=_check_rpc,
    show_envvar=False,
    help="chain JSON-RPC URL (env POT_CHAIN_RPC or POT_CHAIN_RPC_URL)",
)
CONTRACT = typer.Option(
    ...,
    "--contract",
    envvar="POT_CHAIN_CONTRACT",
    callback=_check_address,
    help="PotSettlement address",
)
TASK = typer.Option(..., "--task", callback=_check_task, help="task id <namespace>/<name>")


def _echo(doc: Any) -> None:
    typer.echo(json.dumps(doc, indent=2, sort_keys=True))


def read_validators(path: Path) -> list[str]:
    """Addresses from a JSON list, a peers.json (``replicas[].address``) or one per line."""
    from eth_utils import is_address, to_checksum_address

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise errors.ConfigError(f"--validators {path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise errors.ConfigError(f"--validators {path}: not a text file") from None
    try:
        doc: Any = json.loads(text)
    except ValueError:
        doc = [
            line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
        ]
    if isinstance(doc, dict):
        replicas = doc.get("replicas")
        if not isinstance(replicas, list) or not all(isinstance(r, dict) for r in replicas):
            raise errors.ConfigError(
                f"--validators {path}: a peers.json needs a list of objects under 'replicas'"
            )
        doc = [r.get("address") for r in replicas]
    if not isinstance(doc, list) or not doc:
        raise errors.ConfigError(f"--validators {path}: expected a list of addresses")
    for a in doc:
        if not isinstance(a, str) or not is_address(a):
            shown = _shown(a) if isinstance(a, str) else repr(a)
            raise errors.ConfigError(f"--validators {path}: {shown} is not an address")
    return [str(to_checksum_address(a)) for a in doc]


def _settlement(rpc: str, contract: str) -> tuple[Any, Any]:
    """The chain and the PotSettlement at ``contract``, after checking that it is one: funding
    an address without that contract's code would send the ETH there for good."""
    from eth_utils import to_checksum_address

    from pot.settlement import chain as chaining
    from pot.settlement import contracts

    c = chaining.Chain(url=rpc)
    code = c.call("eth_getCode", lambda: c.w3.eth.get_code(to_checksum_address(contract)))
    if not code:
        raise errors.ConfigError(
            f"--contract {contract}: no contract at this address on chain {c.chain_id} ({c.shown})"
        )
    settlement = contracts.at(c, contract)
    try:
        c.call("threshold", settlement.functions.threshold().call, retry=False)
    except errors.ChainUnreachable:
        raise
    except errors.ChainError:
        raise errors.ConfigError(
            f"--contract {contract}: not a PotSettlement contract (chain {c.chain_id})"
        ) from None
    return c, settlement


def _tx(receipt: Any) -> str:
    return "0x" + bytes(receipt["transactionHash"]).hex()


@app.command()
def deploy(
    rpc: str = RPC,
    key_file: Path = typer.Option(..., "--key-file", help="deployer key file (pays gas)"),
    validators: Path = typer.Option(
        ..., "--validators", help="validator addresses (JSON list, peers.json, lines)"
    ),
    threshold: int = typer.Option(
        0, "--threshold", min=0, help="signatures needed, 2f+1..n; default 2f+1"
    ),
    withdrawal_delay: int = typer.Option(
        7 * 24 * 3600,
        "--withdrawal-delay",
        min=0,
        callback=_check_uint256,
        help="stake unlock delay, seconds",
    ),
) -> None:
    """Deploy PotSettlement with a validator set and print its address as JSON."""
    from pot import keys, urls
    from pot.settlement import chain as chaining
    from pot.settlement import contracts

    addrs = read_validators(validators)
    seen: set[str] = set()
    for a in addrs:
        if a in seen:
            raise errors.ConfigError(f"--validators {validators}: {a} is listed twice")
        seen.add(a)
    quorum = contracts.quorum_threshold(len(addrs))
    if threshold and not quorum <= threshold <= len(addrs):
        raise errors.ConfigError(
            f"--threshold {threshold}: with {len(addrs)} validators it must be from "
            f"2f+1 = {quorum} to {len(addrs)}"
        )
    t = threshold or quorum
    key = keys.from_file(key_file)
    c = chaining.Chain(url=rpc)
    address = contracts.deploy_settlement(
        c, key, addrs, threshold=t, withdrawal_delay=withdrawal_delay
    )
    _echo(
        {
            "contract": address,
            "chainId": c.chain_id,
            "validators": addrs,
            "threshold": t,
            # The URL may carry an API key: shown as logs show it.
            "rpcUrl": urls.redact(rpc),
        }
    )


def _check_token(token: str) -> str:
    return _check_address(token) if token else ""


TOKEN = typer.Option(
    "",
    "--token",
    callback=_check_token,
    help="ERC-20 token address (the task's reward.token); empty: ETH",
)


@app.command()
def fund(
    *,
    task: str = TASK,
    amount: int = typer.Option(
        ..., "--amount", min=1, callback=_check_uint256, help="smallest units (wei) to escrow"
    ),
    rpc: str = RPC,
    contract: str = CONTRACT,
    key_file: Path = typer.Option(..., "--key-file", help="funder key file"),
    token: str = TOKEN,
) -> None:
    """Escrow ETH (fundTask) or, with --token, an ERC-20 (approve, then fundTaskToken)."""
    from pot import ids, keys

    task_id = ids.chain_task_id(task)
    key = keys.from_file(key_file)
    c, settlement = _settlement(rpc, contract)
    if not token:
        receipt = c.transact(
            key,
            settlement.functions.fundTask(task_id),
            abi=settlement.abi,
            value=amount,
            what="fundTask",
        )
        _echo({"task": task, "amount": str(amount), "tx": _tx(receipt)})
        return
    erc20 = _token(c, token)
    held = c.call("balanceOf", erc20.functions.balanceOf(key.address).call)
    if held < amount:
        raise errors.ConfigError(f"--amount {amount}: {key.address} holds {held} of token {token}")
    allowed = c.call("allowance", erc20.functions.allowance(key.address, contract).call)
    if allowed < amount:
        c.transact(key, erc20.functions.approve(contract, amount), abi=erc20.abi, what="approve")
    receipt = c.transact(
        key,
        settlement.functions.fundTaskToken(task_id, token, amount),
        abi=settlement.abi,
        what="fundTaskToken",
    )
    # What arrived (a fee-on-transfer token escrows less than was sent; the contract counts it).
    escrow = c.call("escrowOf", settlement.functions.escrowOf(task_id, key.address).call)[1]
    _echo(
        {
            "task": task,
            "amount": str(amount),
            "token": token,
            "escrow": str(escrow),
            "tx": _tx(receipt),
        }
    )


def _token(c: Any, token: str) -> Any:
    """The ERC-20 at ``token``, after checking there is a contract there at all."""
    from pot.settlement import contracts

    code = c.call("eth_getCode", lambda: c.w3.eth.get_code(token))
    if not code:
        raise errors.ConfigError(
            f"--token {token}: no contract at this address on chain {c.chain_id}"
        )
    return contracts.erc20(c, token)


@app.command()
def reclaim(
    task: str = TASK,
    rpc: str = RPC,
    contract: str = CONTRACT,
    key_file: Path = typer.Option(..., "--key-file", help="the funder's key file"),
) -> None:
    """Take back what is left of a task's escrow (reclaim); then withdraw.

    Only its funder may, and only once it sat 90 days without funding or settlement, or at
    once when the task's target was missed (settled with targetMet false).
    """
    import datetime

    from pot import ids, keys
    from pot.settlement import chain as chaining

    task_id = ids.chain_task_id(task)
    key = keys.from_file(key_file)
    c, settlement = _settlement(rpc, contract)
    left = c.call("escrowOf", settlement.functions.escrowOf(task_id, key.address).call)[1]
    if not left:
        raise errors.ChainError(f"task {task}: no escrow of {key.address} is left to reclaim")
    try:
        receipt = c.transact(
            key,
            settlement.functions.reclaim(task_id),
            abi=settlement.abi,
            what="reclaim",
        )
    except chaining.Reverted as exc:
        if exc.name == "ReclaimLocked":
            when = datetime.datetime.fromtimestamp(int(exc.error_args[0]), datetime.UTC)
            raise errors.ChainError(
                f"task {task}: its escrow can be reclaimed from {when:%Y-%m-%d %H:%M} UTC "
                "(90 days after its last funding or settlement)"
            ) from None
        raise
    _echo({"task": task, "reclaimed": str(left), "tx": _tx(receipt)})


@app.command()
def stake(
    amount: int = typer.Option(
        ..., "--amount", min=1, callback=_check_uint256, help="wei to stake"
    ),
    rpc: str = RPC,
    contract: str = CONTRACT,
    key_file: Path = typer.Option(..., "--key-file", help="the staker's (miner's) key file"),
) -> None:
    """Stake ETH (stake()): a miner's stake is what a rejected segment slashes."""
    from pot import keys

    key = keys.from_file(key_file)
    c, settlement = _settlement(rpc, contract)
    receipt = c.transact(
        key, settlement.functions.stake(), abi=settlement.abi, value=amount, what="stake"
    )
    staked = c.call("stakes", settlement.functions.stakes(key.address).call)[0]
    _echo({"account": key.address, "staked": str(staked), "tx": _tx(receipt)})


@app.command()
def withdraw(
    rpc: str = RPC,
    contract: str = CONTRACT,
    key_file: Path = typer.Option(..., "--key-file", help="the payee's key file"),
    token: str = TOKEN,
) -> None:
    """Pay out what the contract credited to the key's account.

    ETH (withdraw()) or, with --token, that ERC-20 (withdrawToken).
    """
    from pot import keys

    key = keys.from_file(key_file)
    c, settlement = _settlement(rpc, contract)
    credit = c.call(
        "credits", settlement.functions.credits(token or "0x" + "00" * 20, key.address).call
    )
    if not credit:
        raise errors.ChainError(f"{key.address} has no {token or 'ETH'} credited to withdraw")
    call = settlement.functions.withdrawToken(token) if token else settlement.functions.withdraw()
    receipt = c.transact(key, call, abi=settlement.abi, what="withdraw")
    out = {"account": key.address, "withdrawn": str(credit), "tx": _tx(receipt)}
    _echo({**out, "token": token} if token else out)


@app.command()
def balances(
    task: str = TASK,
    rpc: str = RPC,
    contract: str = CONTRACT,
    token: str = TOKEN,
) -> None:
    """Print a task's escrows, and per account what it was credited, holds and withdrew."""
    from pot import ids
    from pot.settlement import allocations, reading

    ids.chain_task_id(task)
    c, _ = _settlement(rpc, contract)
    _echo(reading.task_balances(c, contract, task, token or allocations.NATIVE))


@app.command()
def dev(
    kind: str = typer.Option("auto", "--kind", help="auto (anvil if installed), anvil or evm"),
    port: int = typer.Option(0, "--port", help="port; 0 picks a free one"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to serve on"),
    fund: list[Path] = typer.Option(
        [], "--fund", help="key file whose account gets --fund-wei (repeatable)"
    ),
    fund_wei: int = typer.Option(
        1000 * 10**18, "--fund-wei", min=1, callback=_check_uint256, help="wei per --fund account"
    ),
) -> None:
    """Run a development chain (anvil, or the in-process EVM over HTTP) until interrupted.

    ``--fund KEY_FILE`` gives that key's account ETH to try the other ``pot chain``
    commands with (the in-process EVM has no other funded account you hold a key of)."""
    from pot import keys
    from pot.settlement import devchain

    if kind not in ("auto", "anvil", "evm"):
        raise errors.ConfigError(f"--kind {kind!r}: expected auto, anvil or evm")
    funded = [keys.from_file(path).address for path in fund]  # all read before anything starts
    chain = devchain.start(kind, port=port, host=host)  # type: ignore[arg-type]
    # `kill`, a supervisor or `timeout` send SIGTERM, whose default ends Python without its
    # `finally`: anvil, a process of its own, went on serving the port, orphaned.
    # One `try` from here on: the handler may raise between any two statements.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        for address in funded:
            chain.fund(address, fund_wei)
        _echo({"url": chain.url, "kind": chain.kind, "chainId": chain.chain_id, "funded": funded})
        while True:
            time.sleep(3600)
    finally:
        chain.close()
