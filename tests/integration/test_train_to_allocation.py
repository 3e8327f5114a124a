"""Trainer to validators, all real: two torchrun "nodes" train a DDP gang on loopback,
publish signed segments over HTTP to four PBFT validator processes, which replay
every segment with ``pot.trainer.verification.verify_segment`` (fetching the
checkpoints from each node's ``storeUrl``) and commit a signed allocation.

The cross-component check between issues 5 and 6. A second task runs the same
gang with node 1 cheating (``--cheat perturb-weights``): its segments are
rejected with a named reason, it is slashed and unpaid, the honest node is paid.
Both tasks share one validator set (starting four validators and importing torch
in each costs more than the training itself on two cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pot import keys
from pot.settlement import allocations
from pot.validator import localnet

pytestmark = pytest.mark.slow

POOL = 10**19 + 3
STAKE = 10**15
TORCHRUN = Path(sys.executable).with_name("torchrun")


def _spec(repo_root: Path) -> dict[str, Any]:
    import yaml

    spec = yaml.safe_load((repo_root / "examples" / "task.yaml").read_text())["spec"]
    spec["model"] = {"name": "mlp-regression", "config": {"hidden": 16}}
    spec["dataset"] = {"name": "synthetic-regression", "samples": 512}
    spec["hyperparameters"].update(steps=40, batchSize=16)
    spec["proof"].update(segmentSteps=20, sampleRate=1.0)
    spec["reward"] = {"pool": str(POOL), "validatorFeeBps": 500, "minerStake": str(STAKE)}
    return dict(spec)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[localnet.LocalNet]:
    """Four validators replaying segments for real (the daemon's default auditor)."""
    # The protocol's default view-change timeout: localnet's 1 s (for the view-change tests)
    # is shorter than a replay stall on a loaded two-core machine.
    tuning = {"checkpointInterval": 16, "batchSize": 100, "viewChangeTimeoutMs": 4000}
    vals = localnet.LocalNet(tmp_path_factory.mktemp("vals"), 4, auditor="replay", tuning=tuning)
    try:
        vals.start(extra=("--log-level", "INFO"))
        vals.wait_ready()
        yield vals
    finally:
        vals.close()


def _uid(task: str) -> str:
    """The TrainingTask uid of ``task`` (what the operator registers and sets as
    ``POT_TASK_UID`` in the trainer pods)."""
    return f"uid-{task.replace('/', '-')}"


def _train(
    root: Path, task: str, spec: dict[str, Any], validator_url: str, cheat: dict[int, str]
) -> list[keys.Key]:
    """Two nodes, one torchrun each (static rendezvous on loopback); their miner keys."""
    root.mkdir(parents=True)
    (root / "spec.json").write_text(json.dumps(spec))
    master, *stores = localnet.free_ports(3)
    miners, procs = [], []
    for rank in range(2):
        key = keys.generate()
        miners.append(key)
        node = root / f"node-{rank}"
        node.mkdir()
        (node / f"miner-{rank}.key").write_text(key.secret.hex())
        cmd = [
            str(TORCHRUN),
            "--nnodes=2",
            "--nproc-per-node=1",
            f"--node-rank={rank}",
            "--master-addr=127.0.0.1",
            f"--master-port={master}",
            "-m",
            "pot.trainer",
            "--task",
            task,
            "--task-uid",
            _uid(task),
            "--spec",
            str(root / "spec.json"),
            "--store",
            str(node / "store"),
            "--validator-url",
            validator_url,
            "--miner-key-file",
            str(node / f"miner-{rank}.key"),
            "--advertise-url",
            f"http://127.0.0.1:{stores[rank]}",
            "--port",
            str(stores[rank]),
            *(["--cheat", cheat[rank]] if rank in cheat else []),
        ]
        log = (root / f"node-{rank}.log").open("wb")
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=node,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONWARNINGS": "ignore::UserWarning"},
                start_new_session=True,
            )
        )
        log.close()
    try:
        for rank, p in enumerate(procs):
            rc = p.wait(timeout=150)
            assert rc == 0, (root / f"node-{rank}.log").read_text()[-4000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return miners


def _allocation(net: localnet.LocalNet, task: str) -> dict[str, Any]:
    def signed() -> dict[str, Any] | None:
        code, doc = net.get(0, f"/v1/allocations/{task}/0")
        return doc if code == 200 and len(doc["signatures"]) >= doc["quorum"] else None

    try:
        doc: dict[str, Any] = net.wait(signed, timeout=60, every=0.25)
    except TimeoutError:
        _, view = net.get(0, f"/v1/tasks/{task}")
        logs = "".join(p.read_text()[-1500:] for p in sorted(net.root.glob("replica-*.log")))
        pytest.fail(f"no signed allocation for {task}: {view}\n{logs}")
    return doc


def _run(
    net: localnet.LocalNet, tmp_path: Path, repo_root: Path, task: str, cheat: dict[int, str]
) -> tuple[list[keys.Key], dict[str, Any], dict[str, Any]]:
    spec = _spec(repo_root)
    code, body = net.post(1, "/v1/tasks", {"id": task, "spec": spec, "uid": _uid(task)})
    assert code == 202, body
    net.wait(lambda: all(net.get(i, f"/v1/tasks/{task}")[0] == 200 for i in range(net.n)))
    miners = _train(tmp_path / "train", task, spec, net.url(2), cheat)
    alloc = _allocation(net, task)
    _, view = net.get(0, f"/v1/tasks/{task}")  # the replica that served the allocation
    # Every signature recovers to a validator, over this chain and contract's domain.
    parsed, sigs = allocations.parse(alloc)
    chain = net.doc["chain"]
    signers = {
        allocations.recover(sig, parsed, chain["chainId"], chain["contract"]).lower()
        for _, sig in sigs
    }
    assert signers <= {k.address.lower() for k in net.keys}
    assert len(alloc["signatures"]) >= 3
    return miners, alloc, view


def test_honest_gang_is_verified_and_paid(
    net: localnet.LocalNet, tmp_path: Path, repo_root: Path
) -> None:
    miners, alloc, view = _run(net, tmp_path, repo_root, "default/honest", {})
    progress = view["progress"]
    assert progress["segmentsCommitted"] == 4, json.dumps(view)
    assert progress["segmentsVerified"] == 4, json.dumps(view)
    assert progress["segmentsRejected"] == 0, json.dumps(view)
    assert view["rejections"] == []
    assert alloc["targetMet"] is True
    amounts = dict(zip(alloc["payees"], (int(a) for a in alloc["amounts"]), strict=True))
    assert sum(amounts.values()) == POOL
    for m in miners:
        assert amounts.get(m.address, 0) > 0, alloc
    assert alloc["slashed"] == []


def test_cheating_node_is_rejected_slashed_and_unpaid(
    net: localnet.LocalNet, tmp_path: Path, repo_root: Path
) -> None:
    miners, alloc, view = _run(net, tmp_path, repo_root, "default/cheat", {1: "perturb-weights"})
    honest, cheater = miners
    reasons = {(r["miner"].lower(), r["reason"]) for r in view["rejections"]}
    assert (cheater.address.lower(), "DISTANCE_OVER_THRESHOLD") in reasons, json.dumps(view)
    assert all(r["miner"].lower() == cheater.address.lower() for r in view["rejections"]), (
        json.dumps(view)
    )
    assert view["miners"][honest.address]["verified"] == 2, json.dumps(view)
    assert view["miners"][honest.address]["rejected"] == 0, json.dumps(view)
    amounts = dict(zip(alloc["payees"], (int(a) for a in alloc["amounts"]), strict=True))
    assert sum(amounts.values()) == POOL
    assert amounts.get(honest.address, 0) > 0
    assert cheater.address not in amounts
    assert alloc["slashed"] == [cheater.address]
    assert alloc["slashAmounts"] == [str(STAKE)]
