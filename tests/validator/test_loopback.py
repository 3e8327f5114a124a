"""The issue's scenarios with real ``python -m pot.validator`` processes on 127.0.0.1.

Few and short: one validator set goes through a task's whole lifecycle while
replicas crash, the primary is killed (view change) and a replica restarts from
disk; hostile inputs hit the HTTP API and the PBFT port along the way. The
safety check here is that every replica reports the same allocation digest and
the same state at the same sequence number.
"""

from __future__ import annotations

import copy
import dataclasses
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from pot import keys
from pot.settlement import allocations
from pot.trainer import segments
from pot.validator import localnet

ROOT = Path(__file__).resolve().parents[2]
CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
TASK = "default/loop"
POOL = 10**18 + 12345


def _spec() -> dict[str, Any]:
    spec = yaml.safe_load((ROOT / "examples" / "task.yaml").read_text())["spec"]
    spec = copy.deepcopy(spec)
    spec["hyperparameters"]["steps"] = 40
    spec["proof"] = {"segmentSteps": 20, "sampleRate": 1.0}
    spec["resources"]["nodes"] = 2
    spec["reward"] = {"pool": str(POOL), "validatorFeeBps": 500, "minerStake": "1000"}
    return spec


def _segment(key: keys.Key, rank: int, index: int, *, final: bool) -> segments.Segment:
    seg = segments.Segment(
        task=TASK,
        index=index,
        node_rank=rank,
        miner=key.address,
        start_step=20 * index,
        steps=20,
        start_cid=CID,
        end_cid=CID,
        data_spec={"seed": 0},
        hyperparams_hash="0x" + "00" * 32,
        losses=(0.5,) * 20,
        world=segments.World(nnodes=2, nproc_per_node=1),
        final=final,
        metrics={"evalLoss": 0.1} if final else {},
        store_url="http://127.0.0.1:9",
    )
    return segments.sign(seg, key)


def _statuses(net: localnet.LocalNet, ids: list[int]) -> dict[int, dict[str, Any]]:
    return {i: s for i in ids if (s := net.get(i, "/v1/status")[1])}


@pytest.mark.slow
def test_lifecycle_on_loopback_with_crash_view_change_and_restart(tmp_path: Path) -> None:
    miners = [keys.generate(), keys.generate()]
    net = localnet.LocalNet(tmp_path, 4, auditor=f"reject:{miners[1].address}")
    net.start()
    try:
        net.wait_ready()
        # Hostile input first: none of it may crash a replica.
        assert net.post(1, "/v1/tasks", {"id": "bad", "spec": {}, "uid": "u-1"})[0] == 400
        code, body = net.post(
            1,
            "/v1/tasks",
            {"id": TASK, "spec": {**_spec(), "reward": {"pool": "x"}}, "uid": "u-1"},
        )
        assert code == 400 and body["field"].startswith("spec")
        assert net.post(2, "/v1/segments", b"{not json")[1] == {
            "accepted": False,
            "reason": "MALFORMED",
        }
        forged = dataclasses.replace(
            _segment(miners[0], 0, 0, final=False), miner=miners[1].address
        )
        assert net.post(2, "/v1/segments", forged.record())[1]["reason"] == "BAD_SIGNATURE"
        with socket.create_connection(("127.0.0.1", net.doc["replicas"][2]["pbftPort"])) as s:
            s.sendall(b"POT1\x00\x01" + b"\0" * 16 + b"\xff" * 200)  # a 4 GiB frame header: refused
        # Register through a backup; the primary is replica 0.
        code, body = net.post(1, "/v1/tasks", {"id": TASK, "spec": _spec(), "uid": "u-1"})
        assert code == 202, body
        # One replica crashes: n=4 still commits.
        net.kill(3)
        for rank, key in enumerate(miners):
            seg = _segment(key, rank, 0, final=False)
            assert net.post(rank, "/v1/segments", seg.record())[0] == 202
            assert net.post(2, "/v1/segments", seg.record())[0] == 202  # idempotent
        # Kill the primary: the others change view and go on.
        net.kill(0)
        net.start(3)  # restart from disk; it catches up
        for rank, key in enumerate(miners):
            assert net.post(
                1 + rank, "/v1/segments", _segment(key, rank, 1, final=True).record(), timeout=15
            )[0] in (202, 0)

        def allocated() -> dict[int, Any] | None:
            docs = {i: net.get(i, f"/v1/allocations/{TASK}/0")[1] for i in (1, 2, 3)}
            good = {
                i: d
                for i, d in docs.items()
                if isinstance(d, dict) and len(d.get("signatures", [])) >= 3
            }
            return good if len(good) == 3 else None

        docs = net.wait(allocated, timeout=90)
        digests = {d["digest"] for d in docs.values()}
        assert len(digests) == 1  # the same allocation everywhere
        doc = docs[1]
        alloc, sigs = allocations.parse(doc)
        assert sum(alloc.amounts) == POOL
        assert alloc.slashed == (miners[1].address,) and alloc.slash_amounts == (1000,)
        assert miners[1].address not in alloc.payees and miners[0].address in alloc.payees
        good, dropped = allocations.quorum(
            alloc,
            sigs,
            chain_id=31337,
            contract="0x" + "5" * 40,
            registered=[r["address"] for r in net.doc["replicas"]],
            threshold=3,
        )
        assert len(good) == 3 and not dropped
        status = _statuses(net, [1, 2, 3])
        assert all(s["view"] >= 1 for s in status.values())
        task = net.get(2, f"/v1/tasks/{TASK}")[1]
        assert task["phase"] == "Allocated" and task["progress"]["segmentsRejected"] == 2
        assert {r["reason"] for r in task["rejections"]} == {"LOSS_MISMATCH"}
        code, metrics = net.get(1, "/metrics", raw=True)
        assert code == 200 and "pot_validator_view" in metrics
        assert (
            'pot_validator_rejected_total{reason="OVERSIZED"}'
            in net.get(2, "/metrics", raw=True)[1]
        )
    finally:
        net.close()
