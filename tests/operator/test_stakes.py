"""Miners' stakes at a task's admission: the JSON-RPC client (``operator/stakes.py``) against
a dev chain with PotSettlement deployed, the pure decision (``checks.stake_check``,
``checks.lock_check``) and what the state machine and the shell make of it.

A miner with no stake was paid as one who staked, and a cheater with none lost nothing
when slashed: no task may start before every bound miner's *active* stake covers
``reward.minerStake``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
from collections.abc import Iterator
from typing import Any, cast

import pytest
from aiohttp import web

from pot import errors, keys
from pot.operator import checks, conditions, kubeapi, phases, runtime, stakes, task_reconciler
from pot.operator.config import Config
from pot.settlement import chain as chaining
from pot.settlement import contracts, devchain

from .conftest import serve
from .phases_kit import world

ETH = 10**18
NEED = ETH  # examples/task.yaml's reward.minerStake
DAY = 86400
CONTRACT = "0x" + "5f" * 20


@pytest.fixture(scope="module")
def chain() -> Iterator[tuple[devchain.DevChain, str, keys.Key]]:
    """A dev chain with PotSettlement (withdrawalDelay 7 days) and a funded deployer."""
    dev = devchain.start("auto")
    try:
        deployer = keys.generate()
        dev.fund(deployer.address, 100 * ETH)
        address = contracts.deploy_settlement(
            chaining.Chain(url=dev.url), deployer, [keys.generate().address for _ in range(4)]
        )
        yield dev, address, deployer
    finally:
        dev.close()


def stake(dev: devchain.DevChain, address: str, wei: int, unstake: int = 0) -> keys.Key:
    """A fresh miner that staked ``wei`` and then asked to unstake ``unstake`` of it."""
    miner = keys.generate()
    dev.fund(miner.address, wei + ETH)
    c = chaining.Chain(url=dev.url)
    settlement = contracts.at(c, address)
    c.transact(miner, settlement.functions.stake(), abi=settlement.abi, value=wei, what="stake")
    if unstake:
        fn = settlement.functions.requestUnstake(unstake)
        c.transact(miner, fn, abi=settlement.abi, what="requestUnstake")
    return miner


# -- the client, against the contract -------------------------------------------------


def test_the_selectors_are_the_contracts() -> None:
    abi = {f["name"]: f for f in contracts.abi() if f.get("type") == "function"}
    from eth_utils import function_abi_to_4byte_selector

    assert "0x" + function_abi_to_4byte_selector(abi["stakes"]).hex() == stakes.STAKES
    assert (
        "0x" + function_abi_to_4byte_selector(abi["withdrawalDelay"]).hex()
        == stakes.WITHDRAWAL_DELAY
    )


async def test_read_gives_active_and_pending_stake_and_the_delay(chain: Any) -> None:
    dev, address, _ = chain
    full, leaving = stake(dev, address, 2 * ETH), stake(dev, address, ETH, unstake=ETH)
    nobody = keys.generate()
    view = await stakes.read(
        dev.url,
        address,
        [full.address, leaving.address, nobody.address],
        chain_id=dev.chain_id,
        timeout=5,
    )
    assert view.chain_id == dev.chain_id and view.has_code
    assert view.withdrawal_delay == 7 * DAY
    assert view.stakes[full.address.lower()] == checks.Stake(2 * ETH)
    left = view.stakes[leaving.address.lower()]
    assert (left.amount, left.pending) == (0, ETH) and left.unlock_at > 0
    assert view.stakes[nobody.address.lower()] == checks.Stake(0)


async def test_read_stops_at_a_wrong_chain_id_and_at_an_address_without_code(chain: Any) -> None:
    dev, address, deployer = chain
    wrong = await stakes.read(dev.url, address, [], chain_id=dev.chain_id + 1, timeout=5)
    assert wrong.chain_id == dev.chain_id and wrong.stakes == {}
    empty = await stakes.read(dev.url, deployer.address, [], chain_id=dev.chain_id, timeout=5)
    assert not empty.has_code


async def test_a_contract_that_is_not_pot_settlement_is_a_chain_error(chain: Any) -> None:
    dev, address, _ = chain
    # A function the contract lacks reverts: the error names what was asked, and of whom.
    client = stakes.Client(dev.url, timeout=5)
    with pytest.raises(errors.ChainError, match=f"withdrawalDelay.. on {address}: .*reverted"):
        await client.call(address, "0xdeadbeef", "withdrawalDelay()")


class FailingRpc:
    """An RPC endpoint that answers HTTP 502 (a hosted endpoint's gateway) and counts."""

    def __init__(self) -> None:
        self.requests = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        return web.Response(status=502)


@pytest.fixture
async def failing() -> Any:
    rpc = FailingRpc()
    app = web.Application()
    app.router.add_post("/{tail:.*}", rpc.handle)
    async with serve(app) as base:
        rpc.url = f"{base}/v2/SECRETKEY"  # type: ignore[attr-defined]
        yield rpc


async def test_an_unreachable_rpc_never_shows_its_key(failing: Any) -> None:
    with pytest.raises(errors.ChainUnreachable) as info:
        await stakes.read(failing.url, CONTRACT, [], chain_id=1, timeout=2)
    assert "HTTP 502" in str(info.value) and "SECRETKEY" not in str(info.value)
    with pytest.raises(errors.ChainUnreachable) as info:
        await stakes.read("http://127.0.0.1:9/v2/SECRETKEY", CONTRACT, [], chain_id=1, timeout=2)
    assert "SECRETKEY" not in str(info.value) and "127.0.0.1:9" in str(info.value)


class SecretKube:
    """``get`` of Secrets only: what ``stakes.rpc_url`` reads."""

    def __init__(self, **secrets: dict[str, Any]) -> None:
        self.secrets = secrets
        self.gets: list[str] = []

    async def get(self, api_version: str, plural: str, ns: str, name: str) -> dict[str, Any]:
        assert (api_version, plural) == ("v1", "secrets")
        self.gets.append(name)
        if name not in self.secrets:
            raise kubeapi.NotFound(404, "NotFound", f'secrets "{name}" not found')
        return self.secrets[name]


async def test_the_rpc_url_comes_from_the_set_its_secret_or_the_operator() -> None:
    url = "https://rpc.example/v2/SECRETKEY"
    kube = cast(
        kubeapi.Client,
        SecretKube(rpc={"data": {"url": base64.b64encode(url.encode() + b"\n").decode()}}),
    )
    assert await stakes.rpc_url(kube, "ns", "v", {"rpcUrl": "http://a:1"}, "") == "http://a:1"
    ref = {"rpcSecretRef": {"name": "rpc", "key": "url"}}
    assert await stakes.rpc_url(kube, "ns", "v", ref, "http://fallback") == url
    assert await stakes.rpc_url(kube, "ns", "v", {}, "http://fallback") == "http://fallback"
    with pytest.raises(errors.ConfigError, match="neither rpcUrl nor rpcSecretRef"):
        await stakes.rpc_url(kube, "ns", "v", {}, "")
    with pytest.raises(errors.ConfigError, match=r"has no item 'other'") as info:
        await stakes.rpc_url(kube, "ns", "v", {"rpcSecretRef": {"name": "rpc", "key": "other"}}, "")
    with pytest.raises(errors.ConfigError, match=r'Secret "gone" .* not found in namespace "ns"'):
        await stakes.rpc_url(kube, "ns", "v", {"rpcSecretRef": {"name": "gone", "key": "u"}}, "")
    assert "SECRETKEY" not in str(info.value)


async def test_a_waiting_task_asks_the_chain_again_only_after_its_backoff(
    failing: Any, make_example: Any
) -> None:
    gate = stakes.Gate(Config(poll_interval=0.2, http_timeout=2))
    task = make_example("task.yaml", ns="farm")
    vset = make_example("validatorset.yaml", ns="farm")
    vset["spec"]["chain"]["rpcUrl"] = failing.url
    kube = cast(kubeapi.Client, SecretKube())
    miners = {0: keys.generate().address}
    first = await gate.check(kube, task, vset, miners)
    assert first.problem is not None and first.problem.reason == checks.CHAIN_UNREACHABLE
    assert first.problem.retry == pytest.approx(0.2)
    assert "SECRETKEY" not in first.problem.message
    asked = failing.requests
    again = await gate.check(kube, task, vset, miners)  # a pod event, right after
    assert failing.requests == asked and again.problem is not None
    assert again.problem.reason == checks.CHAIN_UNREACHABLE and again.problem.retry <= 0.2
    await asyncio.sleep(0.25)
    second = await gate.check(kube, task, vset, miners)
    assert failing.requests > asked
    assert second.problem is not None and second.problem.retry == pytest.approx(0.4)
    asked = failing.requests
    await gate.check(kube, task, vset, {0: keys.generate().address})  # another miner: at once
    assert failing.requests > asked
    gate.forget(("farm", task["metadata"]["name"]))
    assert gate.waiting == {}


# -- the decision ---------------------------------------------------------------------

RANK0, RANK1 = keys.generate().address, keys.generate().address
CHAIN = {"chainId": 31337, "contract": CONTRACT}


def view(**kw: Any) -> checks.ChainView:
    base: dict[str, Any] = {
        "url": "http://chain:8545",
        "chain_id": 31337,
        "withdrawal_delay": 7 * DAY,
        "stakes": {},
    }
    base.update(kw)
    return checks.ChainView(**base)


def test_a_miner_without_active_stake_keeps_the_task_waiting(make_example: Any) -> None:
    task = make_example("task.yaml", ns="farm")
    got = checks.stake_check(
        task,
        CHAIN,
        {0: RANK0, 1: RANK1},
        view(
            stakes={
                RANK0.lower(): checks.Stake(NEED),
                RANK1.lower(): checks.Stake(NEED // 4, pending=NEED, unlock_at=99),
            }
        ),
    )
    assert got.problem is not None and not got.problem.permanent
    assert got.problem.reason == "MinerStakeMissing"
    msg = got.problem.message
    assert f"node rank 1 miner {RANK1} has {NEED // 4} wei of active stake, needs {NEED}" in msg
    assert f"pot chain stake --key-file miner-1.key --amount {NEED - NEED // 4}" in msg
    assert f"{NEED} wei pending unstake does not count" in msg
    assert "rank 0" not in msg and CONTRACT in msg


def test_staked_miners_are_verified_and_the_lock_compared_with_the_deadline(
    make_example: Any,
) -> None:
    task = make_example("task.yaml", ns="farm")  # activeDeadlineSeconds 1800
    staked = {RANK0.lower(): checks.Stake(NEED), RANK1.lower(): checks.Stake(2 * NEED)}
    got = checks.stake_check(task, CHAIN, {0: RANK0, 1: RANK1}, view(stakes=staked))
    assert got.problem is None and "each of 2 miners" in got.verified
    assert got.lock is not None and got.lock.reason == checks.LOCK_COVERS
    # A deadline longer than the delay less a day, or none: a warning, never a block.
    task["spec"]["runPolicy"]["activeDeadlineSeconds"] = 6 * DAY + 1
    short = checks.lock_check(task, 7 * DAY)
    assert short.reason == "StakeLockShorterThanTask" and f"at most {6 * DAY}" in short.message
    del task["spec"]["runPolicy"]["activeDeadlineSeconds"]
    assert checks.lock_check(task, 7 * DAY).reason == checks.LOCK_SHORT
    assert "is unset" in checks.lock_check(task, 7 * DAY).message


def test_a_wrong_chain_or_no_contract_is_named(make_example: Any) -> None:
    task = make_example("task.yaml", ns="farm")
    wrong = checks.stake_check(task, CHAIN, {0: RANK0}, view(chain_id=1))
    assert wrong.problem is not None and wrong.problem.reason == "ChainIdMismatch"
    assert (
        "serves chain id 1" in wrong.problem.message and "chainId is 31337" in wrong.problem.message
    )
    none = checks.stake_check(task, CHAIN, {0: RANK0}, view(has_code=False))
    assert none.problem is not None and none.problem.reason == "ContractNotFound"
    assert CONTRACT in none.problem.message


# -- the state machine and the shell ----------------------------------------------------


def test_the_machine_waits_with_the_reason_a_condition_and_a_warning(make_example: Any) -> None:
    task = make_example("task.yaml", ns="farm")
    missing = checks.Problem("MinerStakeMissing", "node rank 1 ...", False, retry=7.0)
    plan = phases.decide(world(task, [], stakes=checks.StakeCheck(missing)))
    assert plan.status["phase"] == "Pending" and plan.status["reason"] == "MinerStakeMissing"
    cond = conditions.find(plan.status["conditions"], conditions.MINERS_STAKED)
    assert cond is not None and cond["status"] == "False" and cond["reason"] == "MinerStakeMissing"
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "MinerStakeMissing")]
    assert plan.requeue == 7.0 and not plan.register and not plan.create_ranks


def test_admission_records_the_stakes_and_warns_of_a_short_lock(
    make_example: Any, make_node: Any
) -> None:
    from pot.operator import gang

    task = make_example("task.yaml", ns="farm")
    lock = checks.Problem(checks.LOCK_SHORT, "runPolicy.activeDeadlineSeconds is unset", False)
    plan = phases.decide(
        world(
            task,
            [gang.node_info(make_node("rig-a")), gang.node_info(make_node("rig-b"))],
            stakes=checks.StakeCheck(verified="each of 2 miners ...", lock=lock),
            registration=phases.Registration("ok"),
        )
    )
    st = {c["type"]: (c["status"], c["reason"]) for c in plan.status["conditions"]}
    assert st["Registered"][0] == "True"
    assert st["MinersStaked"] == ("True", "StakesVerified")
    assert st["StakeLocked"] == ("False", "StakeLockShorterThanTask")
    assert ("Warning", checks.LOCK_SHORT) in [(e.type, e.reason) for e in plan.events]
    assert plan.create_ranks  # a warning, not a block


class Validators:
    """The validators' API: records registrations."""

    def __init__(self) -> None:
        self.registered: list[tuple[str, list[str]]] = []

    async def register(self, bases: Any, task_id: str, spec: Any, miners: Any, *, uid: str) -> None:
        self.registered.append((task_id, list(miners)))

    async def task(self, bases: Any, task_id: str) -> None:
        return None


class StatusKube:
    """Status writes and Events only: a task held at admission writes nothing else."""

    def __init__(self, rt: runtime.Runtime) -> None:
        self.rt, self.writes = rt, []  # type: list[tuple[str, str]]

    async def patch(
        self, api_version: str, plural: str, ns: Any, name: str, patch: Any, **_: Any
    ) -> Any:
        self.writes.append(("patch", plural))
        body = dict(self.rt.tasks[(ns, name)])
        body["status"] = patch["status"]
        body["metadata"] = {**body["metadata"], "resourceVersion": "99"}
        return body

    async def create(self, body: dict[str, Any], plural: str) -> Any:
        self.writes.append(("create", plural))
        return body


def _admitting(make_example: Any, make_node: Any, rpc_url: str, **config: Any) -> Any:
    rt = runtime.Runtime(Config(ref_grace=0, poll_interval=0.5, http_timeout=2, **config))
    task = make_example("task.yaml", ns="farm")
    task["metadata"]["creationTimestamp"] = datetime.datetime.now(datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    vset = make_example("validatorset.yaml", ns="farm")
    vset["spec"]["chain"]["rpcUrl"] = rpc_url
    vset["status"] = {
        "phase": "Ready",
        "conditions": [{"type": conditions.QUORUM, "status": "True"}],
    }
    rt.tasks[("farm", task["metadata"]["name"])] = task
    rt.vsets[("farm", "vset")] = vset
    for n in ("rig-a", "rig-b"):
        rt.observe_node(make_node(n), False)
    secret = {
        "metadata": {"name": "miner-keys", "namespace": "farm", "resourceVersion": "1"},
        "stringData": {f"miner-{r}.key": "0x" + keys.generate().secret.hex() for r in (0, 1)},
    }
    rt.observe_secret(secret, False)
    return rt, task


async def test_the_shell_does_not_register_a_task_whose_chain_cannot_be_read(
    failing: Any, make_example: Any, make_node: Any
) -> None:
    rt, task = _admitting(make_example, make_node, failing.url)
    kube, vclient = StatusKube(rt), Validators()
    name = task["metadata"]["name"]
    await task_reconciler.reconcile(rt, cast(Any, kube), cast(Any, vclient), "farm", name)
    st = rt.tasks[("farm", name)]["status"]
    assert (st["phase"], st["reason"]) == ("Pending", "ChainUnreachable"), st
    assert "SECRETKEY" not in repr(st)
    assert vclient.registered == [] and ("create", "pods") not in kube.writes

    # The same task with the check off (stand-in stacks): registered at once.
    rt, task = _admitting(make_example, make_node, failing.url, stake_check=False)
    vclient = Validators()
    await task_reconciler.reconcile(rt, cast(Any, StatusKube(rt)), cast(Any, vclient), "farm", name)
    assert [t for t, _ in vclient.registered] == [f"farm/{name}"]


async def test_a_task_past_admission_is_not_checked_again(
    failing: Any, make_example: Any, make_node: Any
) -> None:
    """Checked once, at admission: a running task never stops on the chain's word."""
    rt, task = _admitting(make_example, make_node, failing.url)
    stamp = task["metadata"]["creationTimestamp"]
    task["status"] = {
        "phase": "Scheduling",
        "reason": "Creating",
        "conditions": [{"type": "Registered", "status": "True", "lastTransitionTime": stamp}],
    }
    name = task["metadata"]["name"]
    kube = StatusKube(rt)
    await task_reconciler.reconcile(rt, cast(Any, kube), cast(Any, Validators()), "farm", name)
    assert failing.requests == 0 and rt.stakes.waiting == {}
    assert ("create", "pods") in kube.writes
    st = rt.tasks[("farm", name)]["status"]
    assert "MinersStaked" not in {c["type"] for c in st["conditions"]}
