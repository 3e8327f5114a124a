"""The mission end to end: kubectl apply → verified training → on-chain payout.

Runs on the embedded local cluster in CI and on kind with ``--run-kind``
(see conftest.py). Everything a user touches is real: helm installs the
operator, kubectl applies the tasks, torchrun trains, PBFT validators audit,
the settlement sidecars settle on a real EVM.
"""

from __future__ import annotations

import copy
import subprocess
import threading
import time
from typing import Any

import pytest

from pot import errors, stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

POOL = 10 * 10**18
STAKE = 10**18  # examples/task.yaml's reward.minerStake


def task(name: str, *, steps: int = 100, cheat: str | None = None) -> dict[str, Any]:
    """examples/task.yaml, renamed and made smaller for CI."""
    (doc,) = stack.load_examples("task.yaml")
    doc = copy.deepcopy(doc)
    doc["metadata"]["name"] = name
    doc["spec"]["hyperparameters"]["steps"] = steps
    doc["spec"]["reward"]["pool"] = str(POOL)
    if cheat:
        doc["metadata"].setdefault("annotations", {})["pot.dev/cheat"] = cheat
    return doc


def miners() -> dict[str, str]:
    """node rank -> miner address, from the example Secret."""
    keys = stack.dev_secret_keys("miner-keys")
    return {item.split("-")[1].split(".")[0]: k.address for item, k in keys.items()}


def credited(balances: dict[str, Any]) -> dict[str, int]:
    return {a: int(v["credited"]) for a, v in balances["accounts"].items()}


def test_happy_path_pays_every_honest_miner_once(deployment: stack.Stack) -> None:
    deployment.stake_miners(STAKE)
    deployment.fund_task("e2e-happy", POOL)
    final = deployment.run_task(task("e2e-happy"), timeout=600)
    status = final["status"]
    assert status["phase"] == "Succeeded", status
    staked = {c["type"]: c for c in status["conditions"]}["MinersStaked"]
    assert staked["status"] == "True", staked  # read from the chain at admission
    assert status["progress"]["segmentsRejected"] == 0
    assert status["progress"]["segmentsVerified"] >= 1
    balances = deployment.balances("e2e-happy")
    paid = credited(balances)
    for rank, address in miners().items():
        assert paid.get(address, 0) > 0, f"miner {rank} ({address}) was not paid"
    assert sum(paid.values()) == POOL
    assert len(balances["rounds"]) == 1, "settled exactly once"
    # The task's status mirrors the on-chain receipt.
    assert status["settlement"]["txHash"] == balances["rounds"][0]["tx"]
    mirrored = {p["address"]: int(p["amount"]) for p in status["settlement"]["payouts"]}
    assert mirrored == paid


def test_cheating_miner_is_caught_slashed_and_unpaid(deployment: stack.Stack) -> None:
    deployment.stake_miners(STAKE)
    deployment.fund_task("e2e-cheat", POOL)
    final = deployment.run_task(task("e2e-cheat", cheat="1=perturb-weights"), timeout=600)
    status = final["status"]
    assert status["phase"] == "Succeeded", status
    assert status["progress"]["segmentsRejected"] >= 1
    balances = deployment.balances("e2e-cheat")
    paid = credited(balances)
    honest, cheater = miners()["0"], miners()["1"]
    assert paid.get(honest, 0) > 0
    assert paid.get(cheater, 0) == 0
    assert cheater in balances["slashed"]
    assert sum(paid.values()) == POOL


def test_killed_pods_do_not_stop_or_double_pay(deployment: stack.Stack) -> None:
    # The cheater of the test before was slashed its whole stake: a task is admitted only
    # once every miner's active stake covers reward.minerStake, so it stakes again.
    deployment.stake_miners(STAKE)
    deployment.fund_task("e2e-chaos", POOL)
    killed: list[str] = []

    def chaos() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and len(killed) < 2:
            try:
                phase = deployment.get("tt", "e2e-chaos").get("status", {}).get("phase")
            except errors.ClusterError:
                phase = None  # not applied yet
            if phase == "Training":
                for pod in ("vset-2", "e2e-chaos-node-1"):
                    try:
                        deployment.kubectl("delete", "pod", pod, "--wait=false")
                        killed.append(pod)
                    except errors.ClusterError:
                        pass
                return
            time.sleep(1)

    killer = threading.Thread(target=chaos, daemon=True)
    killer.start()
    final = deployment.run_task(task("e2e-chaos", steps=150), timeout=600)
    killer.join(5)
    assert killed, "the task finished before anything could be killed"
    assert final["status"]["phase"] == "Succeeded", final["status"]
    balances = deployment.balances("e2e-chaos")
    assert len(balances["rounds"]) == 1
    assert sum(credited(balances).values()) == POOL


def test_bad_input_gets_a_clear_message(deployment: stack.Stack) -> None:
    bad = task("e2e-bad")
    bad["spec"]["proof"]["segmentSteps"] = 0
    with pytest.raises(errors.ClusterError, match=r"spec\.proof\.segmentSteps"):
        deployment.apply([bad])

    orphan = task("e2e-orphan")
    orphan["spec"]["validatorSetRef"]["name"] = "no-such-vset"
    final = deployment.run_task(orphan, timeout=120)
    assert final["status"]["phase"] == "Failed"
    assert "no-such-vset" in final["status"]["message"]
    pods = deployment.kubectl("get", "pods", "-l", "pot.dev/task=e2e-orphan", "-o", "name")
    assert pods.strip() == ""
    events = deployment.kubectl(
        "get", "events", "--field-selector", "involvedObject.name=e2e-orphan"
    )
    assert "no-such-vset" in events


def test_unreachable_chain_is_reported(deployment: stack.Stack) -> None:
    doc = deployment.validatorset_doc()
    doc["metadata"]["name"] = "vset-nochain"
    doc["spec"]["chain"]["rpcUrl"] = "http://127.0.0.1:9"  # nothing listens on the discard port
    deployment.apply([doc])
    try:

        def reported() -> bool:
            conds = deployment.get("vset", "vset-nochain").get("status", {}).get("conditions", [])
            chain = [c for c in conds if c["type"] == "ChainReachable"]
            return (
                bool(chain)
                and chain[0]["status"] == "False"
                and chain[0]["reason"] == "ChainUnreachable"
            )

        deployment.wait_for("vset-nochain to report its chain", reported, timeout=180, interval=3)
        conds = deployment.get("vset", "vset-nochain")["status"]["conditions"]
        (chain,) = [c for c in conds if c["type"] == "ChainReachable"]
        assert "http://127.0.0.1:9" in chain["message"] and "unreachable" in chain["message"]
        events = deployment.kubectl(
            "get", "events", "--field-selector", "involvedObject.name=vset-nochain"
        )
        assert "ChainUnreachable" in events
    finally:
        subprocess.run(
            [
                stack.tool("kubectl"),
                "--kubeconfig",
                str(deployment.kubeconfig),
                "delete",
                "vset",
                "vset-nochain",
                "--wait=false",
            ],
            check=False,
            capture_output=True,
        )
