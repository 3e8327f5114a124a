"""``pot chain``: what a person types is checked before any chain is asked, and a key pasted
where an address belongs is never echoed.

No chain runs here: these refusals must come before the first RPC call (the URL points at
a port nothing listens on, so a command that got that far would fail differently).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from pot import errors, ids, keys
from pot.settlement import cli

NOWHERE = "http://127.0.0.1:9"
CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli.app, list(args))


def said(out: Result) -> str:
    """What the command printed and raised, on one line (usage errors come in a box)."""
    return " ".join(f"{out.output} {out.exception or ''}".replace("│", " ").split())


@pytest.mark.parametrize(
    ("task", "why"),
    [
        ("pot-system/MLP_demo", "'MLP_demo' is not a TrainingTask name"),
        ("pot-system/1st", "'1st' is not a TrainingTask name"),
        ("pot-system/" + "a" * 64, "is not a TrainingTask name"),
        ("Pot/mlp-demo", "namespace 'Pot' is not a Kubernetes namespace"),
        ("mlp-demo", "is not <namespace>/<name>"),
    ],
)
@pytest.mark.parametrize("command", ["fund", "reclaim", "balances"])
def test_a_task_id_the_operator_could_never_run_is_refused(
    tmp_path: Path, command: str, task: str, why: str
) -> None:
    key_file = tmp_path / "funder.key"
    key_file.write_text(keys.generate().secret.hex())
    args = [command, "--rpc", NOWHERE, "--contract", CONTRACT, "--task", task]
    args += {"fund": ["--key-file", str(key_file), "--amount", "5"], "balances": []}.get(
        command, ["--key-file", str(key_file)]
    )
    out = invoke(*args)
    assert out.exit_code == 2, out.output
    text = said(out)
    assert "--task" in text and why in text, text
    assert "unreachable" not in text


def test_task_ids_the_operator_runs_pass() -> None:
    for task in ("pot-system/mlp-demo", "0team/a", "ns/" + "a" * 63):
        assert ids.check_task_key(task) == task


def test_a_key_given_as_validators_is_not_echoed(tmp_path: Path) -> None:
    key = keys.generate()
    wrong = tmp_path / "validator-0.key"
    wrong.write_text("0x" + key.secret.hex() + "\n")
    out = invoke("deploy", "--rpc", NOWHERE, "--key-file", str(wrong), "--validators", str(wrong))
    assert out.exit_code == 1
    assert isinstance(out.exception, errors.ConfigError)
    text = said(out)
    assert f"--validators {wrong}" in text and "is not an address" in text
    assert key.secret.hex()[:16] not in text


@pytest.mark.parametrize("flag", ["--contract", "--token"])
def test_a_key_given_as_an_address_is_not_echoed(flag: str) -> None:
    secret = keys.generate().secret.hex()
    args = ["balances", "--rpc", NOWHERE, "--task", "ns/t", "--contract", CONTRACT]
    args += [flag, "0x" + secret]
    out = invoke(*args)
    assert out.exit_code == 2
    text = said(out)
    assert flag in text and "is not an address" in text, text
    assert secret[:16] not in text
    short = invoke("balances", "--rpc", NOWHERE, "--task", "ns/t", "--contract", "0x12")
    assert "'0x12' is not an address" in said(short)


@pytest.mark.parametrize(
    "args",
    [
        ["fund", "--task", "ns/t", "--contract", CONTRACT, "--amount", str(2**256)],
        ["stake", "--contract", CONTRACT, "--amount", str(2**256)],
        ["deploy", "--validators", "v.txt", "--withdrawal-delay", str(2**300)],
    ],
)
def test_a_number_beyond_uint256_is_a_usage_error(tmp_path: Path, args: list[str]) -> None:
    key_file = tmp_path / "k.key"
    key_file.write_text(keys.generate().secret.hex())
    out = invoke(*args, "--rpc", NOWHERE, "--key-file", str(key_file))
    assert out.exit_code == 2, out.output
    assert "must be below 2**256" in said(out)


@pytest.mark.parametrize(
    ("content", "said_"),
    [
        (b'{"replicas": [1]}', "a peers.json needs a list of objects under 'replicas'"),
        (b'{"replicas": 5}', "a peers.json needs a list of objects under 'replicas'"),
        (b"\xff\xfe\x00", "not a text file"),
    ],
)
def test_a_malformed_validators_file_is_one_line(
    tmp_path: Path, content: bytes, said_: str
) -> None:
    listed = tmp_path / "peers.json"
    listed.write_bytes(content)
    key_file = tmp_path / "k.key"
    key_file.write_text(keys.generate().secret.hex())
    out = invoke(
        "deploy", "--rpc", NOWHERE, "--key-file", str(key_file), "--validators", str(listed)
    )
    assert out.exit_code == 1
    assert isinstance(out.exception, errors.ConfigError), repr(out.exception)
    assert str(out.exception) == f"--validators {listed}: {said_}"
