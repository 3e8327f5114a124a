"""Reading settlement state back: what a task escrowed, paid, refunded and slashed.

The contract keeps one pull-payment balance per (token, account) across tasks, so per-task
figures come from its events (Credited, Refunded, Slashed, Settled: one per state change);
current balances and withdrawals are per account. Used by ``pot chain balances`` and the
operator's status mirror.
"""

from __future__ import annotations

from typing import Any

from pot import ids
from pot.settlement import allocations, contracts
from pot.settlement import chain as chaining


def escrows(chain: chaining.Chain, contract: str, task_id: bytes) -> dict[str, tuple[str, int]]:
    """Every escrow made for a task: funder -> (token, what is left), from the TaskFunded
    events (the contract keeps one escrow per funder, so nobody can take a task's slot)."""
    c = contracts.at(chain, contract)
    ev = c.events.TaskFunded()
    funded = chain.call(
        "TaskFunded", lambda: ev.get_logs(from_block=0, argument_filters={"taskId": task_id})
    )
    out: dict[str, tuple[str, int]] = {}
    for funder in sorted({str(e["args"]["funder"]) for e in funded}):
        token, left = chain.call("escrowOf", c.functions.escrowOf(task_id, funder).call)
        out[funder] = (str(token), int(left))
    return out


def _same(a: str, b: str) -> bool:
    """Whether two spellings (any case) name the same token address."""
    return int(a, 16) == int(b, 16)


def paying_funder(found: dict[str, tuple[str, int]], total: int, token: str) -> str | None:
    """Whose escrow pays an allocation of ``total`` in ``token``: of the escrows in that
    token (any other one's settle reverts TokenMismatch), the largest that covers it (ties:
    the lowest address), else the largest (its settle reverts InsufficientEscrow, named, and
    the sidecar retries later); None when nobody funded the task in that token."""
    mine = {f: e for f, e in found.items() if _same(e[0], token)}
    if not mine:
        return None
    ranked = sorted(mine, key=lambda f: (-mine[f][1], int(f, 16)))
    covering = [f for f in ranked if mine[f][1] >= total]
    return (covering or ranked)[0]


def task_balances(
    chain: chaining.Chain, contract: str, task: str, token: str = allocations.NATIVE
) -> dict[str, Any]:
    """JSON-ready summary of one task (amounts as decimal strings in ``token``'s units): every
    funder's escrow with its token, and the escrow left, credits and withdrawals in ``token``
    (the task's reward.token, the only one its allocations can be paid in; anybody may open
    an escrow for the task in another, and adding those up would mix units)."""
    c = contracts.at(chain, contract)
    task_id = ids.chain_task_id(task)
    funders = escrows(chain, contract, task_id)
    escrow = sum(left for t, left in funders.values() if _same(t, token))
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
    refunded = sum(  # (a reclaim refunds each funder in its own escrow's token)
        int(e["args"]["amount"])
        for e in logs("Refunded")
        if _same(funders.get(str(e["args"]["funder"]), (token, 0))[0], token)
    )
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
        "funders": {f: {"token": t, "escrow": str(left)} for f, (t, left) in funders.items()},
        "token": token,
        "escrow": str(escrow),
        "rounds": rounds,
        "accounts": accounts,
        "refunded": str(refunded),
        "slashed": {a: str(v) for a, v in slashed.items()},
    }
