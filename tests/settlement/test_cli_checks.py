"""``pot chain``: bad input is refused before anything is sent, with one line naming it.

Against the in-process EVM: a ``--contract`` that holds no PotSettlement must not take
anyone's ETH (``fund`` used to send the value to any address and say it worked), and the
output never shows an RPC URL's secret parts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from pot import errors, ids, keys
from pot.settlement import chain as chaining
from pot.settlement import cli, contracts, devchain

ETH = 10**18


@dataclass
class Env:
    url: str
    dev: devchain.DevChain
    key_file: Path
    key: keys.Key
    contract: str
    validators: list[str]


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli.app, list(args), env=env)


def said(out: Result) -> str:
    """What the command printed and raised, on one line (usage errors come in a box)."""
    return " ".join(f"{out.output} {out.exception or ''}".replace("│", " ").split())


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("chaincli")
    with devchain.running("evm") as dev:
        key = keys.generate()
        dev.fund(key.address, 100 * ETH)
        key_file = root / "funder.key"
        key_file.write_text(key.secret.hex())
        validators = [keys.generate().address for _ in range(4)]
        listed = root / "validators.txt"
        listed.write_text("\n".join(validators) + "\n")
        out = invoke(
            "deploy", "--rpc", dev.url, "--key-file", str(key_file), "--validators", str(listed)
        )
        assert out.exit_code == 0, out.output
        contract = json.loads(out.output)["contract"]
        yield Env(dev.url, dev, key_file, key, contract, validators)


def as_funder(env: Env, contract: str | None = None) -> list[str]:
    return [
        "--rpc",
        env.url,
        "--contract",
        contract or env.contract,
        "--key-file",
        str(env.key_file),
    ]


def test_fund_refuses_an_address_without_the_contract(chain: Env) -> None:
    eoa = chain.validators[0]
    before = chain.dev.call("eth_getBalance", eoa, "latest")
    out = invoke("fund", *as_funder(chain, eoa), "--task", "ns/t", "--amount", "5")
    assert out.exit_code == 1
    assert isinstance(out.exception, errors.ConfigError)
    assert f"--contract {eoa}: no contract at this address" in str(out.exception)
    assert chain.dev.call("eth_getBalance", eoa, "latest") == before
    out = invoke("balances", "--rpc", chain.url, "--contract", eoa, "--task", "ns/t")
    assert out.exit_code == 1 and "no contract at this address" in str(out.exception)


def test_malformed_contract_address_is_a_usage_error_not_a_traceback(chain: Env) -> None:
    out = invoke("balances", "--rpc", chain.url, "--contract", "0x12", "--task", "ns/t")
    assert out.exit_code == 2
    assert "'0x12' is not an address" in said(out)


@pytest.mark.parametrize(
    ("flag", "value"), [("--threshold", "-1"), ("--withdrawal-delay", "-5"), ("--threshold", "9")]
)
def test_deploy_checks_numbers_before_sending(
    chain: Env, tmp_path: Path, flag: str, value: str
) -> None:
    listed = tmp_path / "v.txt"
    listed.write_text("\n".join(chain.validators))
    out = invoke(
        "deploy", "--rpc", chain.url, "--key-file", str(chain.key_file),
        "--validators", str(listed), flag, value,
    )  # fmt: skip
    assert out.exit_code in (1, 2)
    text = said(out)
    assert flag in text, text
    if value == "9":
        assert "from 2f+1 = 3 to 4" in text


def test_deploy_refuses_a_validator_listed_twice(chain: Env, tmp_path: Path) -> None:
    listed = tmp_path / "v.txt"
    listed.write_text("\n".join([chain.validators[0]] * 4))
    out = invoke(
        "deploy", "--rpc", chain.url, "--key-file", str(chain.key_file), "--validators", str(listed)
    )
    assert out.exit_code == 1 and "is listed twice" in str(out.exception)


@pytest.mark.parametrize("amount", ["0", "-3"])
def test_fund_amount_must_be_positive(chain: Env, amount: str) -> None:
    out = invoke("fund", *as_funder(chain), "--task", "ns/t", "--amount", amount)
    assert out.exit_code == 2 and "--amount" in said(out)


def test_rpc_url_secrets_stay_out_of_errors_and_output(chain: Env, tmp_path: Path) -> None:
    out = invoke(
        "balances", "--rpc", "ftp://user:SECRET@x/v2/KEY", "--contract", chain.contract,
        "--task", "ns/t",
    )  # fmt: skip
    assert out.exit_code == 2
    assert "is not an http(s) URL" in said(out)
    assert "SECRET" not in out.output and "KEY" not in out.output
    # deploy echoes the URL it used: only scheme, host and port.
    listed = tmp_path / "v.txt"
    listed.write_text("\n".join(chain.validators))
    secret_url = chain.url + "/?apikey=TOPSECRET"
    out = invoke(
        "deploy",
        "--rpc",
        secret_url,
        "--key-file",
        str(chain.key_file),
        "--validators",
        str(listed),
    )
    assert out.exit_code == 0, out.output
    assert "TOPSECRET" not in out.output
    assert json.loads(out.output)["rpcUrl"] == chain.url + "/…"


def test_the_sidecars_rpc_spelling_works(chain: Env) -> None:
    out = invoke("balances", "--rpc-url", chain.url, "--contract", chain.contract, "--task", "a/b")
    assert out.exit_code == 0, out.output
    out = invoke(
        "balances", "--contract", chain.contract, "--task", "a/b",
        env={"POT_CHAIN_RPC_URL": chain.url},
    )  # fmt: skip
    assert out.exit_code == 0, out.output


def test_stake_fund_reclaim_withdraw(chain: Env) -> None:
    out = invoke("stake", *as_funder(chain), "--amount", "7")
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["staked"] == "7"
    out = invoke("withdraw", *as_funder(chain))
    assert out.exit_code == 1
    assert "no ETH credited to withdraw" in str(out.exception)
    out = invoke("reclaim", *as_funder(chain), "--task", "ns/none")
    assert out.exit_code == 1
    assert "no escrow of" in str(out.exception) and "left to reclaim" in str(out.exception)
    out = invoke("fund", *as_funder(chain), "--task", "ns/back", "--amount", "50")
    assert out.exit_code == 0, out.output
    chain.dev.call("evm_increaseTime", hex(91 * 24 * 3600))
    chain.dev.mine(1)
    out = invoke("reclaim", *as_funder(chain), "--task", "ns/back")
    assert out.exit_code == 0, out.output
    out = invoke("withdraw", *as_funder(chain))
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["withdrawn"] == "50"


# ---- ERC-20 escrow (a task's reward.token): fund --token, withdraw --token


@pytest.fixture(scope="module")
def token(chain: Env) -> Iterator[str]:
    c = chaining.Chain(url=chain.url)
    address = contracts.deploy(c, chain.key, "TestToken")
    t = contracts.at(c, address, "TestToken")
    c.transact(chain.key, t.functions.mint(chain.key.address, 1000), abi=t.abi, what="mint")
    yield address


def test_fund_with_a_token_approves_then_escrows_it(chain: Env, token: str) -> None:
    out = invoke("fund", *as_funder(chain), "--task", "ns/tok", "--amount", "300", "--token", token)
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["token"] == token and doc["escrow"] == "300"
    c = chaining.Chain(url=chain.url)
    settlement = contracts.at(c, chain.contract)
    got = settlement.functions.escrowOf(ids.chain_task_id("ns/tok"), chain.key.address).call()
    assert tuple(got) == (token, 300)
    held = contracts.erc20(c, token).functions.balanceOf(chain.key.address).call()
    assert held == 700
    # A top-up reuses the approval path and adds to the same escrow.
    out = invoke("fund", *as_funder(chain), "--task", "ns/tok", "--amount", "100", "--token", token)
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["escrow"] == "400"


def test_fund_refuses_more_than_the_funder_holds(chain: Env, token: str) -> None:
    out = invoke(
        "fund", *as_funder(chain), "--task", "ns/tok2", "--amount", "10000", "--token", token
    )
    assert out.exit_code == 1 and isinstance(out.exception, errors.ConfigError)
    assert "--amount 10000" in str(out.exception) and "holds" in str(out.exception)


def test_fund_refuses_a_token_address_without_code(chain: Env) -> None:
    eoa = chain.validators[1]
    out = invoke("fund", *as_funder(chain), "--task", "ns/tok3", "--amount", "1", "--token", eoa)
    assert out.exit_code == 1 and "--token" in str(out.exception)
    assert "no contract at this address" in str(out.exception)


def test_withdraw_names_the_token_it_has_nothing_of(chain: Env, token: str) -> None:
    out = invoke("withdraw", *as_funder(chain), "--token", token)
    assert out.exit_code == 1 and f"no {token} credited" in str(out.exception)


def test_balances_add_up_escrows_in_one_token_only(chain: Env, token: str) -> None:
    """Anybody may open an escrow for a task in any token; ``balances`` shows each funder's
    with its token and sums only those in the task's token (``--token``; default ETH)."""
    task = "ns/mixed"
    out = invoke("fund", *as_funder(chain), "--task", task, "--amount", "300", "--token", token)
    assert out.exit_code == 0, out.output
    other = keys.generate()
    chain.dev.fund(other.address, 10 * ETH)
    c = chaining.Chain(url=chain.url)
    settlement = contracts.at(c, chain.contract)
    fn = settlement.functions.fundTask(ids.chain_task_id(task))
    c.transact(other, fn, abi=settlement.abi, value=2 * ETH, what="fundTask")
    base = [*as_funder(chain)[:4], "--task", task]
    in_eth = json.loads(invoke("balances", *base).output)
    assert in_eth["escrow"] == str(2 * ETH) and int(in_eth["token"], 16) == 0
    assert {f["token"] for f in in_eth["funders"].values()} == {token, in_eth["token"]}
    in_token = json.loads(invoke("balances", *base, "--token", token).output)
    assert in_token["escrow"] == "300" and in_token["token"] == token


def test_an_unfunded_key_is_named_with_its_balance(chain: Env, tmp_path: Path) -> None:
    poor = keys.generate()
    key_file = tmp_path / "miner-0.key"
    key_file.write_text(poor.secret.hex())
    base = ["--rpc", chain.url, "--contract", chain.contract, "--key-file", str(key_file)]
    out = invoke("stake", *base, "--amount", str(ETH))
    assert out.exit_code == 1 and isinstance(out.exception, errors.ChainError)
    text = str(out.exception)
    assert f"key file {key_file} is account {poor.address}, which holds 0 wei" in text
    assert f"needs {ETH} wei plus gas" in text and poor.secret.hex() not in text
    chain.dev.fund(poor.address, ETH)  # all of it goes to the stake: nothing left for gas
    out = invoke("stake", *base, "--amount", str(ETH))
    assert out.exit_code == 1 and f"holds {ETH} wei" in str(out.exception)
    out = invoke("stake", *base, "--amount", str(ETH - 1000))
    assert out.exit_code == 1 and f"{poor.address}, which holds {ETH} wei" in str(out.exception)
    out = invoke("stake", *base, "--amount", str(ETH // 2))
    assert out.exit_code == 0, out.output
