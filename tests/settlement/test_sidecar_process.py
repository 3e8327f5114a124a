"""The sidecar as a real process (``python -m pot.settlement``), killed with SIGKILL between
persisting / broadcasting its settle and seeing the receipt, then restarted: exactly one
settle lands, and it is the very transaction persisted before the crash (issue 7)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pot import keys
from pot.settlement import allocations, devchain, intents

from .conftest import ETH, FakeValidator, World

pytestmark = pytest.mark.slow


def _start(
    w: World,
    v: FakeValidator,
    tmp: Path,
    key_file: Path,
    port: int,
    fault: str | None,
    log_path: Path,
) -> subprocess.Popen[bytes]:
    peers = tmp / "peers.json"
    peers.write_text(
        json.dumps(
            {
                "n": 4,
                "f": 1,
                "replicas": [{"id": i, "address": k.address} for i, k in enumerate(w.validators)],
                "chain": {
                    "rpcUrl": w.dev.url,
                    "chainId": w.chain_id,
                    "contract": w.address,
                    # The dev chain mines only on transactions: with one block on top
                    # required, nothing would ever confirm the settle.
                    "confirmations": 0,
                },
            }
        )
    )
    env = {k: val for k, val in os.environ.items() if k != "POT_SETTLEMENT_FAULT"}
    if fault:
        env["POT_SETTLEMENT_FAULT"] = fault
    with log_path.open("ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pot.settlement",
                "--validator-url",
                v.url,
                "--config",
                str(peers),
                "--key-file",
                str(key_file),
                "--state-dir",
                str(tmp / "state"),
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
                "--interval",
                "0.2",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )


def _wait(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("point", ["after-persist", "after-broadcast"])
def test_killed_sidecar_restarts_into_exactly_one_settle(
    world: World, validator: FakeValidator, tmp_path: Path, point: str
) -> None:
    w = world
    task = w.task()
    w.fund_task(task, 10 * ETH)
    alloc = allocations.Allocation(
        task=task,
        round=0,
        payees=(keys.generate().address, keys.generate().address),
        amounts=(2 * ETH, 3 * ETH),
    )
    validator.publish(w.alloc_json(alloc))
    key = w.key(10 * ETH)
    key_file = tmp_path / "validator-0.key"
    key_file.write_text(key.secret.hex())
    key_file.chmod(0o600)
    log_path = tmp_path / "sidecar.log"
    log = intents.IntentLog(tmp_path / "state")
    port = devchain.free_port()

    proc = _start(w, validator, tmp_path, key_file, port, point, log_path)
    try:
        _wait(
            lambda: (
                "fault point" in log_path.read_text(errors="replace") or proc.poll() is not None
            ),
            60,
            f"the sidecar to reach {point}",
        )
        assert proc.poll() is None, log_path.read_text()
        proc.kill()  # SIGKILL: no cleanup, no flush
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    [before] = log.all()
    assert before.state == "sending" and len(before.attempts) == 1
    persisted = before.attempts[0].tx_hash
    # after-persist: the transaction never left the process
    assert bool(w.settled_events(task, 0)) == (point == "after-broadcast")

    proc = _start(w, validator, tmp_path, key_file, port, None, log_path)
    try:
        _wait(lambda: log.all()[0].state == "final", 60, "the restarted sidecar to finish")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert "pot_settlement_rebroadcasts_total 1.0" in metrics
    finally:
        proc.terminate()
        proc.wait(10)
    [after] = log.all()
    assert after.tx_hash == persisted and len(after.attempts) == 1  # the same transaction
    events = w.settled_events(task, 0)
    assert len(events) == 1 and "0x" + bytes(events[0]["transactionHash"]).hex() == persisted
    assert [w.credit(p) for p in alloc.payees] == list(alloc.amounts)
    assert key.secret.hex() not in log_path.read_text()  # the key is never logged
