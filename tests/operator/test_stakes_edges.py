"""The stake check at admission, at its edges: a hosted RPC's rate limit and a node's
error are the chain not answering (not a wrong contract), ranks sharing an address, a
task without ``reward.minerStake``, and a task deleted while its stakes are read.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest
from aiohttp import web

from pot import errors
from pot.operator import checks, kubeapi, stakes, task_reconciler
from pot.operator.config import Config

from .conftest import serve
from .test_stakes import CHAIN, NEED, RANK0, RANK1, StatusKube, Validators, _admitting, view

Answer = Callable[[dict[str, Any]], Awaitable[web.Response]]


@contextlib.asynccontextmanager
async def rpc(answer: Answer) -> AsyncIterator[str]:
    """A JSON-RPC endpoint answering each request with ``answer(request body)``; its URL
    carries a key that must never show."""

    async def handle(request: web.Request) -> web.Response:
        return await answer(await request.json())

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    async with serve(app) as base:
        yield f"{base}/v3/SECRETKEY"


def error(code: int, message: str) -> Answer:
    async def answer(body: dict[str, Any]) -> web.Response:
        return web.json_response(
            {"jsonrpc": "2.0", "id": body["id"], "error": {"code": code, "message": message}}
        )

    return answer


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (-32005, "daily request count exceeded, request rate limited"),  # EIP-1474, Infura
        (429, "Your app has exceeded its compute units per second capacity"),  # Alchemy
        (-32000, "header not found"),  # a node behind a load balancer, not synced yet
    ],
)
async def test_an_rpc_refusing_for_now_is_unreachable_not_a_wrong_contract(
    make_example: Any, code: int, message: str
) -> None:
    """A hosted RPC's rate limit answered as a JSON-RPC error was ContractCallFailed,
    "is <contract> a PotSettlement?": the user was sent after the wrong thing."""
    task = make_example("task.yaml", ns="farm")
    vset = make_example("validatorset.yaml", ns="farm")
    async with rpc(error(code, message)) as url:
        vset["spec"]["chain"]["rpcUrl"] = url
        got = await stakes.check(
            cast(kubeapi.Client, None), Config(http_timeout=2), task, vset, {0: RANK0}
        )
    assert got.problem is not None and got.problem.reason == checks.CHAIN_UNREACHABLE
    assert message in got.problem.message and f"code {code}" in got.problem.message
    assert "PotSettlement" not in got.problem.message
    assert "SECRETKEY" not in got.problem.message


async def test_a_revert_is_still_the_contracts_answer() -> None:
    async with rpc(error(3, "execution reverted")) as url:
        with pytest.raises(errors.ChainError) as info:
            await stakes.Client(url, timeout=2).call(
                "0x" + "5f" * 20, stakes.WITHDRAWAL_DELAY, "withdrawalDelay()"
            )
    assert not isinstance(info.value, errors.ChainUnreachable)
    assert "withdrawalDelay() on 0x5f" in str(info.value) and "execution reverted" in str(
        info.value
    )
    assert "SECRETKEY" not in str(info.value)


def test_ranks_sharing_an_address_need_one_stake_and_are_named_once(make_example: Any) -> None:
    """The validators pay and slash by address (one minerStake per round), so one stake
    covers every rank of an address; the message asked for one stake per rank, and a
    user following it staked twice."""
    task = make_example("task.yaml", ns="farm")
    ranks = {0: RANK0, 1: RANK0, 2: RANK1}
    staked = {RANK0.lower(): checks.Stake(NEED), RANK1.lower(): checks.Stake(NEED)}
    got = checks.stake_check(task, CHAIN, ranks, view(stakes=staked))
    assert got.problem is None and "each of 2 miners" in got.verified
    got = checks.stake_check(task, CHAIN, ranks, view(stakes={RANK1.lower(): checks.Stake(NEED)}))
    assert got.problem is not None and got.problem.reason == checks.STAKE_MISSING
    msg = got.problem.message
    assert f"node ranks 0, 1 (one address, one stake) miner {RANK0} has 0 wei" in msg, msg
    assert msg.count("pot chain stake") == 1 and f"--amount {NEED}" in msg


def test_a_task_without_miner_stake_needs_what_the_validators_count(make_example: Any) -> None:
    """No reward.minerStake (a CRD without its default) needed 0 wei at admission, while
    the validators count and slash 1 ETH (pot.validator.specs): a miner without stake
    was admitted."""
    task = make_example("task.yaml", ns="farm")
    del task["spec"]["reward"]["minerStake"]
    got = checks.stake_check(task, CHAIN, {0: RANK0}, view(stakes={}))
    assert got.problem is not None and got.problem.reason == checks.STAKE_MISSING
    assert f"minerStake={10**18} wei" in got.problem.message


class GoneKube(StatusKube):
    """The task is deleted: its status cannot be written (404, as the API answers)."""

    async def patch(
        self, api_version: str, plural: str, ns: Any, name: str, patch: Any, **_: Any
    ) -> Any:
        if (ns, name) not in self.rt.tasks:
            raise kubeapi.NotFound(404, "NotFound", f'{plural} "{name}" not found')
        return await super().patch(api_version, plural, ns, name, patch)


async def test_a_task_deleted_while_its_stakes_are_read_leaves_no_backoff_behind(
    make_example: Any, make_node: Any
) -> None:
    """The delete event's forget() ran while the chain was asked; the check then kept the
    task's backoff, for the life of the operator."""
    held: dict[str, Any] = {}

    async def deleted_meanwhile(body: dict[str, Any]) -> web.Response:
        held["rt"].observe_task(held["task"], True)
        return web.Response(status=502)

    async with rpc(deleted_meanwhile) as url:
        rt, task = _admitting(make_example, make_node, url)
        held.update(rt=rt, task=task)
        name = task["metadata"]["name"]
        with contextlib.suppress(kubeapi.NotFound):
            await task_reconciler.reconcile(
                rt, cast(Any, GoneKube(rt)), cast(Any, Validators()), "farm", name
            )
    assert ("farm", name) not in rt.tasks
    assert rt.stakes.waiting == {}
