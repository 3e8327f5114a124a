"""Where the sidecar's chain settings come from (docs/protocol.md "Settlement sidecar"):
peers.json exactly as the operator writes it, the RPC URL by flag, env or file, and errors
that name what to set without showing the URL's secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pot import errors, keys
from pot.operator import builders_validators as bv
from pot.operator.config import Config as OperatorConfig
from pot.settlement import __main__ as entry
from pot.settlement import allocations, devchain, intents, sidecar

from .conftest import ETH, SECRET, FakeValidator, FlakyRPC, World

CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def operator_peers(
    tmp: Path, *, chain_id: int = 31337, contract: str = CONTRACT, **chain: Any
) -> Path:
    """peers.json as the operator builds it for a ValidatorSet with ``chain`` settings."""
    vset = {
        "metadata": {"name": "vset", "namespace": "farm", "uid": "u-1"},
        "spec": {
            "replicas": 4,
            "chain": {"chainId": chain_id, "contract": contract, **chain},
        },
    }
    ids = [bv.Identity(address=f"0x{i:040x}", public_key="0x04" + "11" * 64) for i in range(4)]
    path = tmp / "peers.json"
    path.write_text(bv.peers_json(bv.build_peers(vset, ids, OperatorConfig())))
    return path


def load(peers: Path, env: dict[str, str], rpc_url: str | None = None) -> sidecar.Config:
    return sidecar.Config.from_peers(
        peers,
        rpc_url=rpc_url,
        env=env,
        validator_url="http://127.0.0.1:8080",
        state_dir=peers.parent / "state",
    )


def test_rpc_secret_ref_url_comes_from_the_env(tmp_path: Path) -> None:
    peers = operator_peers(tmp_path, rpcSecretRef={"name": "rpc", "key": "url"})
    assert "rpcUrl" not in json.loads(peers.read_text())["chain"]  # what the operator writes
    url = f"https://eth.example/v2/{SECRET}"
    # A Secret made from a file usually ends in a newline.
    cfg = load(peers, {sidecar.RPC_URL_ENV: url + "\n"})
    assert cfg.rpc_url == url and cfg.chain_id == 31337 and cfg.confirmations == 1


def test_rpc_url_precedence_flag_then_env_then_file(tmp_path: Path) -> None:
    peers = operator_peers(tmp_path, rpcUrl="http://file:8545")
    env = {sidecar.RPC_URL_ENV: "http://env:8545"}
    assert load(peers, {}).rpc_url == "http://file:8545"
    assert load(peers, env).rpc_url == "http://env:8545"
    assert load(peers, env, rpc_url="http://flag:8545").rpc_url == "http://flag:8545"
    assert load(peers, {sidecar.RPC_URL_ENV: "  "}).rpc_url == "http://file:8545"


def test_no_rpc_url_anywhere_is_one_error_naming_all_three(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    peers = operator_peers(tmp_path, rpcSecretRef={"name": "rpc", "key": "url"})
    monkeypatch.delenv(sidecar.RPC_URL_ENV, raising=False)
    key_file = tmp_path / "validator-0.key"
    key_file.write_text(keys.generate().secret.hex())
    argv = ["--validator-url", "http://127.0.0.1:8080", "--config", str(peers)]
    argv += ["--key-file", str(key_file), "--state-dir", str(tmp_path / "state")]
    with pytest.raises(SystemExit) as info:
        entry.main(argv)
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no chain RPC URL") and err.count("\n") == 1, err
    for name in ("--rpc-url", "POT_CHAIN_RPC_URL", "chain.rpcUrl"):
        assert name in err


def test_bad_rpc_url_names_its_source_not_its_secret(tmp_path: Path) -> None:
    peers = operator_peers(tmp_path, rpcSecretRef={"name": "rpc", "key": "url"})
    with pytest.raises(errors.ConfigError, match="POT_CHAIN_RPC_URL") as info:
        load(peers, {sidecar.RPC_URL_ENV: f"wss://eth.example/v2/{SECRET}"})
    assert "not an http(s) URL" in str(info.value) and SECRET not in str(info.value)


@pytest.mark.parametrize(("given", "ok"), [(0, True), (1, True), (12, True), (-1, False)])
def test_confirmations_as_the_crd_allows(tmp_path: Path, given: int, ok: bool) -> None:
    """The CRD says minimum 0: every value it admits starts the sidecar."""
    peers = operator_peers(tmp_path, rpcUrl="http://file:8545", confirmations=given)
    if ok:
        assert load(peers, {}).confirmations == given
    else:
        with pytest.raises(errors.ConfigError, match=r"chain\.confirmations must be >= 0"):
            load(peers, {})


def test_crd_schema_says_confirmations_are_blocks_on_top(repo_root: Path) -> None:
    import yaml

    doc = yaml.safe_load((repo_root / "crds" / "validatorset.yaml").read_text())
    schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    field = schema["properties"]["spec"]["properties"]["chain"]["properties"]["confirmations"]
    assert field["minimum"] == 0 and field["default"] == 1
    assert "on top" in field["description"]


@pytest.mark.slow
def test_sidecar_process_with_rpc_secret_ref_settles_through_a_rate_limit(
    world: World, validator: FakeValidator, tmp_path: Path
) -> None:
    """``python -m pot.settlement`` as the operator runs it for ``chain.rpcSecretRef``: no
    rpcUrl in peers.json, the URL (with an API key in its path) in POT_CHAIN_RPC_URL, an
    endpoint that rate-limits at first. It settles, and even its DEBUG log never shows the
    key."""
    w = world
    task = w.task()
    w.fund_task(task, 10 * ETH)
    alloc = allocations.Allocation(
        task=task, round=0, payees=(keys.generate().address,), amounts=(2 * ETH,)
    )
    validator.publish(w.alloc_json(alloc))
    key = w.key(10 * ETH)
    key_file = tmp_path / "validator-0.key"
    key_file.write_text(key.secret.hex())
    key_file.chmod(0o600)
    peers = operator_peers(
        tmp_path,
        chain_id=w.chain_id,
        contract=w.address,
        rpcSecretRef={"name": "rpc", "key": "url"},
        confirmations=0,  # the dev chain mines only on transactions
    )
    rpc = FlakyRPC(w.dev.url, status=429, failures=3)
    log_path = tmp_path / "sidecar.log"
    env = {k: v for k, v in os.environ.items() if k != entry.FAULT_ENV}
    env[sidecar.RPC_URL_ENV] = rpc.url + "\n"
    argv = [sys.executable, "-m", "pot.settlement", "--validator-url", validator.url]
    argv += ["--config", str(peers), "--key-file", str(key_file)]
    argv += ["--state-dir", str(tmp_path / "state"), "--host", "127.0.0.1"]
    argv += ["--port", str(devchain.free_port()), "--interval", "0.2", "--log-level", "DEBUG"]
    state = intents.IntentLog(tmp_path / "state")
    with log_path.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if state.all() and state.all()[0].state == "final":
                break
            time.sleep(0.1)
        assert proc.poll() is None, log_path.read_text()  # no crash
    finally:
        proc.terminate()
        proc.wait(10)
        rpc.close()
    text = log_path.read_text()
    assert [i.state for i in state.all()] == ["final"], text[-3000:]
    assert rpc.refused == 3 and "HTTP 429" in text
    assert "Traceback" not in text
    assert SECRET not in text and "127.0.0.1" in text
    assert len(w.settled_events(task, 0)) == 1
