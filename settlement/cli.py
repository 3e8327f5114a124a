"""``pot chain``: deploy the settlement contract, fund tasks, read balances, run a dev chain.

Output is JSON on stdout (the demo and the chart read it). Keys come from files only
(``pot.keys``); errors users can cause are ``pot.errors`` and print as one line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from pot import errors

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)

RPC = typer.Option(..., "--rpc", envvar="POT_CHAIN_RPC", help="chain JSON-RPC URL")
CONTRACT = typer.Option(
    ..., "--contract", envvar="POT_CHAIN_CONTRACT", help="PotSettlement address"
)


def _echo(doc: Any) -> None:
    typer.echo(json.dumps(doc, indent=2, sort_keys=True))


def read_validators(path: Path) -> list[str]:
    """Addresses from a JSON list, a peers.json (``replicas[].address``) or one per line."""
    from eth_utils import is_address, to_checksum_address

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise errors.ConfigError(f"--validators {path}: cannot read ({exc.strerror})") from None
    try:
        doc: Any = json.loads(text)
    except ValueError:
        doc = [
            line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
        ]
    if isinstance(doc, dict):
        doc = [r.get("address") for r in doc.get("replicas", [])]
    if not isinstance(doc, list) or not doc:
        raise errors.ConfigError(f"--validators {path}: expected a list of addresses")
    for a in doc:
        if not isinstance(a, str) or not is_address(a):
            raise errors.ConfigError(f"--validators {path}: {a!r} is not an address")
    return [str(to_checksum_address(a)) for a in doc]


@app.command()
def deploy(
    rpc: str = RPC,
    key_file: Path = typer.Option(..., "--key-file", help="deployer key file (pays gas)"),
    validators: Path = typer.Option(
        ..., "--validators", help="validator addresses (JSON list, peers.json, lines)"
    ),
    threshold: int = typer.Option(0, "--threshold", help="signatures needed; default 2f+1"),
    withdrawal_delay: int = typer.Option(
        7 * 24 * 3600, "--withdrawal-delay", help="stake unlock delay, seconds"
    ),
) -> None:
    """Deploy PotSettlement with a validator set and print its address as JSON."""
    from pot import keys
    from pot.settlement import chain as chaining
    from pot.settlement import contracts

    addrs = read_validators(validators)
    t = threshold or contracts.quorum_threshold(len(addrs))
    c = chaining.Chain(url=rpc)
    address = contracts.deploy_settlement(
        c, keys.from_file(key_file), addrs, threshold=t, withdrawal_delay=withdrawal_delay
    )
    _echo(
        {
            "contract": address,
            "chainId": c.chain_id,
            "validators": addrs,
            "threshold": t,
            "rpcUrl": rpc,
        }
    )


@app.command()
def fund(
    task: str = typer.Option(..., "--task", help="task id <namespace>/<name>"),
    amount: int = typer.Option(..., "--amount", help="wei to escrow"),
    rpc: str = RPC,
    contract: str = CONTRACT,
    key_file: Path = typer.Option(..., "--key-file", help="funder key file"),
) -> None:
    """Escrow ETH for a task (fundTask)."""
    from pot import ids, keys
    from pot.settlement import chain as chaining
    from pot.settlement import contracts

    c = chaining.Chain(url=rpc)
    settlement = contracts.at(c, contract)
    receipt = c.transact(
        keys.from_file(key_file),
        settlement.functions.fundTask(ids.chain_task_id(task)),
        abi=settlement.abi,
        value=amount,
        what="fundTask",
    )
    _echo(
        {"task": task, "amount": str(amount), "tx": "0x" + bytes(receipt["transactionHash"]).hex()}
    )


@app.command()
def reclaim(
    task: str = typer.Option(..., "--task", help="task id <namespace>/<name>"),
    rpc: str = RPC,
    contract: str = CONTRACT,
    key_file: Path = typer.Option(..., "--key-file", help="the funder's key file"),
) -> None:
    """Take back what is left of a task's escrow (reclaim): only its funder, and only once
    it sat RECLAIM_AFTER (90 days) without funding or settlement. Credited; then withdraw."""
    import datetime

    from pot import ids, keys
    from pot.settlement import chain as chaining
    from pot.settlement import contracts

    c = chaining.Chain(url=rpc)
    settlement = contracts.at(c, contract)
    task_id = ids.chain_task_id(task)
    key = keys.from_file(key_file)
    left = c.call("escrowOf", settlement.functions.escrowOf(task_id, key.address).call)[1]
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
    _echo(
        {
            "task": task,
            "reclaimed": str(left),
            "tx": "0x" + bytes(receipt["transactionHash"]).hex(),
        }
    )


@app.command()
def balances(
    task: str = typer.Option(..., "--task", help="task id <namespace>/<name>"),
    rpc: str = RPC,
    contract: str = CONTRACT,
) -> None:
    """Print a task's escrow, and per account what it was credited, holds and withdrew."""
    from pot.settlement import chain as chaining
    from pot.settlement import reading

    _echo(reading.task_balances(chaining.Chain(url=rpc), contract, task))


@app.command()
def dev(
    kind: str = typer.Option("auto", "--kind", help="auto (anvil if installed), anvil or evm"),
    port: int = typer.Option(0, "--port", help="port; 0 picks a free one"),
    host: str = typer.Option("127.0.0.1", "--host"),
) -> None:
    """Run a development chain (anvil, or the in-process EVM over HTTP) until interrupted."""
    from pot.settlement import devchain

    if kind not in ("auto", "anvil", "evm"):
        raise errors.ConfigError(f"--kind {kind!r}: expected auto, anvil or evm")
    chain = devchain.start(kind, port=port, host=host)  # type: ignore[arg-type]
    _echo({"url": chain.url, "kind": chain.kind, "chainId": chain.chain_id})
    try:
        while True:
            time.sleep(3600)
    finally:
        chain.close()
