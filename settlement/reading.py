"""Reading settlement state back: what a task escrowed, paid, refunded and slashed.

The contract keeps one pull-payment balance per (token, account) across tasks, so per-task
figures come from its events (Credited, Refunded, Slashed, Settled: one per state change);
current balances and withdrawals are per account. Used by ``pot chain balances`` and the
operator's status mirror.
"""

from __future__ import annotations

from typing import Any

from pot import ids
from pot.settlement import chain as chaining
from pot.settlement import contracts


def task_balances(chain: chaining.Chain, contract: str, task: str) -> dict[str, Any]:
    """JSON-ready summary of one task (amounts as decimal wei strings)."""
    c = contracts.at(chain, contract)
    task_id = ids.chain_task_id(task)
    funder, token, escrow = chain.call("tasks", c.functions.tasks(task_id).call)
    filt = {"taskId": task_id}

    def logs(event: str, **extra: Any) -> list[Any]:
        ev = getattr(c.events, event)()
        return list(
            chain.call(event, lambda: ev.get_logs(from_block=0, argument_filters={**filt, **extra}))
        )

    credited: dict[str, int] = {}
    for e in logs("Credited"):
        credited[e["args"]["account"]] = credited.get(e["args"]["account"], 0) + int(
            e["args"]["amount"]
        )
    refunded = sum(int(e["args"]["amount"]) for e in logs("Refunded"))
    slashed: dict[str, int] = {}
    for e in logs("Slashed"):
        slashed[e["args"]["account"]] = slashed.get(e["args"]["account"], 0) + int(
            e["args"]["taken"]
        )
    rounds = [
        {
            "round": int(e["args"]["round"]),
            "total": str(e["args"]["total"]),
            "targetMet": bool(e["args"]["targetMet"]),
            "tx": "0x" + bytes(e["transactionHash"]).hex(),
            "block": int(e["blockNumber"]),
        }
        for e in logs("Settled")
    ]
    accounts: dict[str, Any] = {}
    withdrawn_events = c.events.Withdrawn()
    for account, amount in credited.items():
        w = chain.call(
            "Withdrawn",
            lambda a=account: withdrawn_events.get_logs(  # type: ignore[misc]
                from_block=0, argument_filters={"account": a, "token": token}
            ),
        )
        accounts[account] = {
            "credited": str(amount),
            "balance": str(chain.call("credits", c.functions.credits(token, account).call)),
            "withdrawn": str(sum(int(e["args"]["amount"]) for e in w)),
        }
    return {
        "task": task,
        "taskId": "0x" + task_id.hex(),
        "funder": funder,
        "token": token,
        "escrow": str(escrow),
        "rounds": rounds,
        "accounts": accounts,
        "refunded": str(refunded),
        "slashed": {a: str(v) for a, v in slashed.items()},
    }
