"""``pot chain deploy|fund|balances|reclaim`` against the in-process EVM."""

from __future__ import annotations

import json
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
