"""The stake check at admission with real parts: the operator under kopf's KopfRunner on
the local cluster, a dev chain (anvil, else the in-process EVM) with PotSettlement, and
the stand-in validators and trainers of test_cluster.

A task whose miner has not staked waits in Pending with MinerStakeMissing (naming the
rank, the address and the command) and starts, without anyone touching it, once the
miner stakes. The contract's withdrawalDelay here (1 hour) is shorter than the task's
deadline: a warning on the task, not a block.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pot import keys, stack
from pot.settlement import chain as chaining
from pot.settlement import contracts, devchain

from .conftest import kopf_operator, standin_env, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
ROOT = Path(__file__).resolve().parents[2]
ETH = 10**18


@pytest.fixture(scope="module")
def settlement() -> Iterator[tuple[devchain.DevChain, str]]:
    dev = devchain.start("auto")
    try:
        deployer = keys.generate()
        dev.fund(deployer.address, 10 * ETH)
        validators = stack.dev_secret_keys("vset-keys")
        address = contracts.deploy_settlement(
            chaining.Chain(url=dev.url),
            deployer,
            [k.address for _, k in sorted(validators.items())],
            withdrawal_delay=3600,
        )
        yield dev, address
    finally:
        dev.close()


@pytest.fixture(scope="module")
def staking_operator(cluster: Any) -> Any:
    yield from kopf_operator(
        standin_env(
            KUBECONFIG=str(cluster.kubeconfig), POT_STAKE_CHECK="1", POT_POLL_INTERVAL="0.5"
        )
    )


def _stake(dev: devchain.DevChain, address: str, miner: keys.Key, wei: int) -> None:
    dev.fund(miner.address, wei + ETH)
    c = chaining.Chain(url=dev.url)
    settlement = contracts.at(c, address)
    c.transact(miner, settlement.functions.stake(), abi=settlement.abi, value=wei, what="stake")


def _conds(task: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (task.get("status") or {}).get("conditions") or []}


@pytest.mark.timeout(120)
def test_a_task_waits_for_its_miners_stake_then_starts(
    cluster: Any, settlement: Any, staking_operator: Any
) -> None:
    dev, address = settlement
    ns = cluster.namespace("stakes")
    vset = yaml.safe_load((ROOT / "examples" / "validatorset.yaml").read_text())
    vset["spec"]["chain"].update(rpcUrl=dev.url, chainId=dev.chain_id, contract=address)
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=yaml.safe_dump(vset))
    miners = stack.dev_secret_keys("miner-keys")
    need = 10**18  # examples/task.yaml's reward.minerStake
    _stake(dev, address, miners["miner-0.key"], need)
    cluster.apply_task(ns, "staked", model__config={"standinSeconds": 0.05})

    def waiting() -> dict[str, Any] | None:
        st = cluster.task(ns, "staked").get("status") or {}
        return st if st.get("reason") == "MinerStakeMissing" else None

    st = wait_for("MinerStakeMissing", waiting, timeout=60)
    assert st["phase"] == "Pending"
    rank1 = miners["miner-1.key"].address
    assert f"node rank 1 miner {rank1} has 0 wei of active stake, needs {need}" in st["message"]
    assert f"pot chain stake --key-file miner-1.key --amount {need}" in st["message"]
    assert "rank 0" not in st["message"]
    assert _conds(cluster.task(ns, "staked"))["MinersStaked"]["status"] == "False"
    assert cluster.pods(ns, "pot.dev/task=staked") == []  # nothing released, nothing registered
    events = cluster.kubectl(
        "get", "events", "-n", ns, "--field-selector", "involvedObject.name=staked"
    )
    assert "MinerStakeMissing" in events

    _stake(dev, address, miners["miner-1.key"], need)
    wait_for(
        "the task to start once staked",
        lambda: (
            (cluster.task(ns, "staked").get("status") or {}).get("phase")
            in ("Scheduling", "Training", "Verifying")
        ),
        timeout=60,
    )
    conds = _conds(cluster.task(ns, "staked"))
    assert conds["Registered"]["status"] == "True"
    assert conds["MinersStaked"]["status"] == "True", conds["MinersStaked"]
    assert conds["StakeLocked"]["status"] == "False"
    assert conds["StakeLocked"]["reason"] == "StakeLockShorterThanTask"
    assert "withdrawalDelay (3600s" in conds["StakeLocked"]["message"]
