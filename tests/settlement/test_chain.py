"""Error wrapping: an unreachable RPC is retried with backoff, then ChainUnreachable."""

from __future__ import annotations

import time

import pytest

from pot import errors
from pot.settlement import chain as chaining
from pot.settlement import devchain, sidecar


def test_unreachable_rpc_is_retried_then_wrapped() -> None:
    c = chaining.Chain(
        url=f"http://127.0.0.1:{devchain.free_port()}", retries=3, backoff=0.05, timeout=1
    )
    started = time.monotonic()
    with pytest.raises(errors.ChainUnreachable) as info:
        _ = c.chain_id
    assert time.monotonic() - started >= 0.05 + 0.1  # two backoffs: 0.05 then 0.1
    assert info.value.__cause__ is not None  # chained, not swallowed


def test_decode_unknown_revert_is_empty() -> None:
    assert chaining.decode_revert("0xdeadbeef", []) == ("", ())
    assert chaining.decode_revert(None, []) == ("", ())


def test_config_accepts_zero_confirmations(tmp_path: object) -> None:
    """0 blocks on top: final once included (the CRD allows it, so the sidecar must too)."""
    cfg = sidecar.Config(
        validator_url="http://x",
        rpc_url="http://x",
        contract="0x" + "00" * 20,
        state_dir=tmp_path,
        confirmations=0,
    )  # type: ignore[arg-type]
    assert cfg.confirmations == 0


def test_config_rejects_bad_values(tmp_path: object) -> None:
    with pytest.raises(errors.ConfigError, match="validator-url"):
        sidecar.Config(
            validator_url="ftp://x",
            rpc_url="http://x",
            contract="0x" + "00" * 20,
            state_dir=tmp_path,
        )  # type: ignore[arg-type]
    with pytest.raises(errors.ConfigError, match="confirmations"):
        sidecar.Config(
            validator_url="http://x",
            rpc_url="http://x",
            contract="0x" + "00" * 20,
            state_dir=tmp_path,
            confirmations=-1,
        )  # type: ignore[arg-type]
    with pytest.raises(errors.ConfigError, match="not an http"):
        sidecar.Config(
            validator_url="http://x",
            rpc_url="ws://x",
            contract="0x" + "00" * 20,
            state_dir=tmp_path,
        )  # type: ignore[arg-type]
