"""``pot chain deploy|fund|balances|reclaim`` against the in-process EVM."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

from typer.testing import CliRunner

from pot import keys
from pot.settlement import allocations, cli, contracts, devchain
from pot.settlement import chain as chaining

ETH = 10**18


def test_deploy_fund_settle_balances(tmp_path: Path) -> None:
    runner = CliRunner()
    with devchain.running("evm") as dev:
        deployer = keys.generate()
        dev.fund(deployer.address, 100 * ETH)
        key_file = tmp_path / "deployer.key"
        key_file.write_text(deployer.secret.hex())
        vals = [keys.generate() for _ in range(4)]
        peers = tmp_path / "peers.json"
        peers.write_text(
            json.dumps({"replicas": [{"id": i, "address": v.address} for i, v in enumerate(vals)]})
        )
        out = runner.invoke(
            cli.app,
            ["deploy", "--rpc", dev.url, "--key-file", str(key_file), "--validators", str(peers)],
        )
        assert out.exit_code == 0, out.output
        doc = json.loads(out.output)
        assert doc["threshold"] == 3 and doc["validators"] == [v.address for v in vals]
        address = doc["contract"]
        # what fund and reclaim both take
        as_funder = ["--rpc", dev.url, "--contract", address, "--key-file", str(key_file)]
        as_funder += ["--task", "ns/cli"]
        out = runner.invoke(cli.app, ["fund", *as_funder, "--amount", str(5 * ETH)])
        assert out.exit_code == 0, out.output
        payee = keys.generate().address
        alloc = allocations.Allocation(task="ns/cli", round=0, payees=(payee,), amounts=(2 * ETH,))
        rpc = chaining.Chain(url=dev.url)
        sigs = sorted(
            ((v.address, allocations.sign(v, alloc, rpc.chain_id, address)) for v in vals[:3]),
            key=lambda p: int(p[0], 16),
        )
        c = contracts.at(rpc, address)
        rpc.transact(
            deployer,
            c.functions.settle(
                *alloc.settle_args([bytes.fromhex(s[2:]) for _, s in sigs], deployer.address)
            ),
            abi=c.abi,
        )
        out = runner.invoke(
            cli.app, ["balances", "--rpc", dev.url, "--contract", address, "--task", "ns/cli"]
        )
        assert out.exit_code == 0, out.output
        doc = json.loads(out.output)
        assert doc["escrow"] == str(3 * ETH)
        assert doc["funders"] == {
            deployer.address: {"token": "0x" + "00" * 20, "escrow": str(3 * ETH)}
        }
        assert doc["accounts"] == {
            payee: {"credited": str(2 * ETH), "balance": str(2 * ETH), "withdrawn": "0"}
        }
        assert [r["round"] for r in doc["rounds"]] == [0]
        reclaim = ["reclaim", *as_funder]
        out = runner.invoke(cli.app, reclaim)
        assert out.exit_code != 0
        assert "can be reclaimed from" in str(out.exception), out.output
        dev.call("evm_increaseTime", hex(91 * 24 * 3600))
        dev.mine(1)
        out = runner.invoke(cli.app, reclaim)
        assert out.exit_code == 0, out.output
        assert json.loads(out.output)["reclaimed"] == str(3 * ETH)
        out = runner.invoke(
            cli.app, ["balances", "--rpc", dev.url, "--contract", address, "--task", "ns/cli"]
        )
        doc = json.loads(out.output)
        assert doc["escrow"] == "0"


def test_bad_validators_file_is_one_line_error(tmp_path: Path) -> None:
    f = tmp_path / "v.txt"
    f.write_text("0x1234\n")
    out = CliRunner().invoke(
        cli.app,
        ["deploy", "--rpc", "http://127.0.0.1:1", "--key-file", "k", "--validators", str(f)],
    )
    assert out.exit_code != 0
    assert "is not an address" in str(out.exception)


def test_dev_chain_funds_a_new_key_that_then_deploys(tmp_path: Path) -> None:
    """The walkthrough by hand, as processes: `pot key new`, `pot chain dev --fund`, then
    `pot chain deploy` paid from that key (the in-process EVM funds no key a user holds)."""
    import subprocess
    import sys

    from tests.test_cli import run

    key_file, vals = tmp_path / "me.key", [tmp_path / f"validator-{i}.key" for i in range(4)]
    assert run("key", "new", str(key_file), *map(str, vals)).returncode == 0
    addresses = tmp_path / "addresses.txt"
    addresses.write_text(run("key", "address", *map(str, vals)).stdout)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pot", "chain", "dev", "--kind", "evm", "--fund", str(key_file)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        while not lines or lines[-1] != "}\n":
            line = proc.stdout.readline()
            assert line, "pot chain dev exited before printing its URL"
            lines.append(line)
        doc = json.loads("".join(lines))
        me = keys.from_file(key_file).address
        assert doc["funded"] == [me]
        assert int(devchain.rpc(doc["url"], "eth_getBalance", [me, "latest"]), 16) == 1000 * ETH
        out = run(
            "chain", "deploy", "--rpc", doc["url"], "--key-file", str(key_file),
            "--validators", str(addresses),
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["threshold"] == 3
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()


def test_dev_chain_stopped_by_sigterm_stops_its_anvil() -> None:
    """`kill PID` (SIGTERM) of `pot chain dev` stops the anvil it started; it used to leave
    anvil running, still serving the port, with no process of ours to stop it."""
    import subprocess
    import sys

    import pytest

    from pot import errors

    if devchain.anvil_path() is None:
        pytest.skip("anvil is not installed")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pot", "chain", "dev", "--kind", "anvil"],
        stdout=subprocess.PIPE,
        text=True,
    )
    children: list[int] = []
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not lines or lines[-1] != "}\n":
            line = proc.stdout.readline()
            assert line, "pot chain dev exited before printing its URL"
            lines.append(line)
        url = json.loads("".join(lines))["url"]
        task = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        children = [int(p) for p in task.read_text().split()]
        assert children, "pot chain dev --kind anvil started no process"
        proc.terminate()
        proc.wait(timeout=30)
        with pytest.raises(errors.ChainUnreachable):
            devchain.rpc(url, "eth_chainId", timeout=1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in children:  # an orphan of the old code: stop it, by its PID only
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if proc.stdout is not None:
            proc.stdout.close()
