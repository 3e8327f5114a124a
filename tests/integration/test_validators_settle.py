"""Validators to chain: real PBFT replicas agree on an allocation and real settlement
sidecars pay it on a real EVM node (anvil), exactly once, while two sidecars race.

The cross-component check behind issues 6 and 7: the replicas sign with
``pot.settlement.allocations`` and the contract verifies those signatures;
the sidecars learn what to settle from ``GET /v1/allocations``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest

from pot import ids, keys
from pot.settlement import chain as chaining
from pot.settlement import contracts, devchain, reading, receipts
from pot.trainer import segments
from pot.validator import localnet

pytestmark = pytest.mark.slow

TASK = "default/settle-it"
POOL = 3 * 10**18 + 7
CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
ETH = 10**18


def _segment(key: keys.Key, rank: int) -> dict[str, object]:
    seg = segments.Segment(
        task=TASK,
        index=0,
        node_rank=rank,
        miner=key.address,
        start_step=0,
        steps=20,
        start_cid=CID,
        end_cid=CID,
        data_spec={"seed": 0},
        hyperparams_hash="0x" + "00" * 32,
        losses=(0.5,) * 20,
        world=segments.World(nnodes=2, nproc_per_node=1),
        final=True,
        metrics={"evalLoss": 0.1},
        store_url="http://127.0.0.1:9",
    )
    return segments.sign(seg, key).record()


def _spec(repo_root: Path) -> dict[str, object]:
    import yaml

    spec = yaml.safe_load((repo_root / "examples" / "task.yaml").read_text())["spec"]
    spec["hyperparameters"]["steps"] = 20
    spec["proof"] = {"segmentSteps": 20, "sampleRate": 1.0}
    spec["reward"] = {"pool": str(POOL), "validatorFeeBps": 500, "minerStake": "1000"}
    return dict(spec)


def test_allocation_settles_once_on_chain(tmp_path: Path, repo_root: Path) -> None:
    chain = devchain.start("auto")
    net = localnet.LocalNet(tmp_path / "vals", 4, auditor="accept")
    sidecars: list[subprocess.Popen[bytes]] = []
    logs: list[IO[bytes]] = []
    try:
        c = chaining.Chain(url=chain.url)
        deployer = keys.generate()
        chain.fund(deployer.address, 10 * ETH)
        for k in net.keys:
            chain.fund(k.address, ETH)
        address = contracts.deploy_settlement(c, deployer, [k.address for k in net.keys])
        funder = keys.generate()
        chain.fund(funder.address, POOL + ETH)
        settlement = contracts.at(c, address)
        c.transact(
            funder,
            settlement.functions.fundTask(ids.chain_task_id(TASK)),
            abi=settlement.abi,
            value=POOL,
            what="fund",
        )
        doc = json.loads(net.config.read_text())
        doc["chain"] = {
            "rpcUrl": chain.url,
            "chainId": chain.chain_id,
            "contract": address,
            "confirmations": 1,
        }
        net.config.write_text(json.dumps(doc))
        net.doc = doc
        net.start()
        net.wait_ready()
        code, body = net.post(1, "/v1/tasks", {"id": TASK, "spec": _spec(repo_root), "uid": "u-1"})
        assert code == 202, body
        miners = [keys.generate(), keys.generate()]
        for rank, key in enumerate(miners):
            assert net.post(rank, "/v1/segments", _segment(key, rank), timeout=15)[0] == 202
        # Two sidecars race to settle the same allocation.
        for i in (0, 2):
            log = (tmp_path / f"sidecar-{i}.log").open("wb")
            logs.append(log)
            sidecars.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "pot.settlement",
                        "--validator-url",
                        net.url(i),
                        "--config",
                        str(net.config),
                        "--key-file",
                        str(net.root / f"validator-{i}.key"),
                        "--state-dir",
                        str(tmp_path / f"settle-{i}"),
                        "--port",
                        str(localnet.free_ports(1)[0]),
                        "--host",
                        "127.0.0.1",
                        "--interval",
                        "0.5",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            )
        deadline = time.monotonic() + 120
        summary = reading.task_balances(c, address, TASK)
        while not summary["rounds"] and time.monotonic() < deadline:
            time.sleep(1)
            summary = reading.task_balances(c, address, TASK)
        assert summary["rounds"], (tmp_path / "sidecar-0.log").read_text()[-3000:]
        time.sleep(3)  # give the losing sidecar time to (harmlessly) try
        summary = reading.task_balances(c, address, TASK)
        assert len(summary["rounds"]) == 1
        credited = {a: int(v["credited"]) for a, v in summary["accounts"].items()}
        assert sum(credited.values()) == POOL
        for m in miners:
            assert credited[m.address] > 0
        validator_fees = sum(credited.get(k.address, 0) for k in net.keys)
        # 5% fee split by (equal) stake; integer rounding moves at most a few wei.
        assert abs(validator_fees - POOL * 500 // 10_000) <= len(net.keys)
        # The operator's view of the same settlement, read from the event logs.
        receipt = receipts.find(chain.url, address, TASK, validators={k.address for k in net.keys})
        assert receipt is not None
        assert receipt["txHash"] == summary["rounds"][0]["tx"]
        assert {p["address"]: int(p["amount"]) for p in receipt["payouts"]} == credited
        assert {p["role"] for p in receipt["payouts"]} == {"miner", "validator"}
        assert receipts.find(chain.url, address, "default/never-funded") is None
    finally:
        for p in sidecars:
            p.kill()
            p.wait()
        for log in logs:
            log.close()
        net.close()
        chain.close()
