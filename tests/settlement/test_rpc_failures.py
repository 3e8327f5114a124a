"""An RPC endpoint that rate-limits (429), fails at its gateway (502/503) or does not answer:
retried with backoff as "chain unreachable", never a crash, and the API key in its URL never
shown (issue: hosted providers put it in the path)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pot import errors
from pot.settlement import chain as chaining
from pot.settlement import devchain, receipts, redacting, sidecar

from .conftest import SECRET, FakeValidator, FlakyRPC, World
from .test_sidecar import publish_round


@pytest.fixture
def flaky() -> Iterator[FlakyRPC]:
    rpc = FlakyRPC()
    try:
        yield rpc
    finally:
        rpc.close()


@pytest.mark.parametrize("status", [429, 502, 503])
def test_busy_rpc_is_retried_with_backoff(
    flaky: FlakyRPC, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    flaky.status, flaky.failures = status, 2
    c = chaining.Chain(url=flaky.url, retries=4, backoff=0.05)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        assert c.chain_id == 31337
    assert time.monotonic() - started >= 0.05 + 0.1  # two backoffs: 0.05 then 0.1
    assert flaky.requests == 3  # one request per try: web3's own retry is off
    retried = [r for r in caplog.records if f"HTTP {status}" in r.getMessage()]
    assert len(retried) == 2, caplog.text
    assert SECRET not in caplog.text


def test_persistent_rate_limit_becomes_chain_unreachable(
    flaky: FlakyRPC, caplog: pytest.LogCaptureFixture
) -> None:
    flaky.failures = 10**6
    c = chaining.Chain(url=flaky.url, retries=3, backoff=0.01)
    with (
        caplog.at_level(logging.DEBUG, logger="pot"),
        pytest.raises(errors.ChainUnreachable) as info,
    ):
        _ = c.chain_id
    assert "HTTP 429" in str(info.value) and flaky.requests == 3
    assert info.value.__cause__ is not None  # chained, not swallowed
    assert SECRET not in str(info.value) and SECRET not in caplog.text


def test_other_client_errors_are_not_retried_and_name_the_settings(flaky: FlakyRPC) -> None:
    """401/403/404 mean a wrong URL or API key: the same request again cannot help."""
    flaky.status, flaky.failures = 401, 10**6
    c = chaining.Chain(url=flaky.url, retries=3, backoff=0.01)
    with pytest.raises(errors.ChainError) as info:
        _ = c.chain_id
    assert not isinstance(info.value, errors.ChainUnreachable)
    assert flaky.requests == 1
    message = str(info.value)
    assert "HTTP 401" in message and "POT_CHAIN_RPC_URL" in message and "--rpc-url" in message
    assert SECRET not in message


def test_unreachable_rpc_never_shows_its_secret(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://user:PASSWORD@127.0.0.1:{devchain.free_port()}/v2/{SECRET}?apikey=QUERYKEY"
    c = chaining.Chain(url=url, retries=2, backoff=0.01, timeout=1)
    shown = []
    with caplog.at_level(logging.DEBUG, logger="pot"):
        with pytest.raises(errors.ChainUnreachable) as info:
            _ = c.chain_id
        shown.append(str(info.value))
        with pytest.raises(errors.ChainUnreachable) as info:
            receipts.chain_id(url, timeout=1)
        shown.append(str(info.value))
        with pytest.raises(errors.ChainUnreachable) as info:
            devchain.rpc(url, "eth_chainId", timeout=1)
        shown.append(str(info.value))
    shown.append(caplog.text)
    for text in shown:
        for secret in (SECRET, "PASSWORD", "QUERYKEY"):
            assert secret not in text, text
    assert "127.0.0.1" in shown[0]  # the host is still named


def test_receipts_rate_limited_is_unreachable_without_the_secret(flaky: FlakyRPC) -> None:
    flaky.failures = 1
    with pytest.raises(errors.ChainUnreachable) as info:
        receipts.chain_id(flaky.url)
    assert "429" in str(info.value) and SECRET not in str(info.value)
    assert receipts.chain_id(flaky.url) == 31337


def test_scrub_hides_the_bare_path_requests_quotes() -> None:
    url = f"https://eth.example:8443/v2/{SECRET}?k=Q"
    text = f"Max retries exceeded with url: /v2/{SECRET}?k=Q (for {url})"
    out = redacting.scrub(text, url)
    assert SECRET not in out and "k=Q" not in out
    assert "https://eth.example:8443/…" in out


def test_log_scrubber_cleans_arguments_and_tracebacks() -> None:
    url = f"http://127.0.0.1:1/v2/{SECRET}"
    scrubber = redacting.LogScrubber(url)
    try:
        raise RuntimeError(f"boom at /v2/{SECRET}")
    except RuntimeError:
        record = logging.LogRecord(
            "urllib3", logging.DEBUG, __file__, 1, "%s %s", (url, "x"), sys.exc_info()
        )
    assert scrubber.filter(record)
    assert SECRET not in record.getMessage() and SECRET not in (record.exc_text or "")
    assert SECRET not in logging.Formatter().format(record)


async def test_sidecar_loop_rides_out_a_rate_limit_and_settles(
    world: World, validator: FakeValidator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """More refusals than one call's retries: the loop turn fails, is logged, and the next
    turn goes on; the settle lands and nothing shows the key."""
    w = world
    alloc = publish_round(w, validator)
    rpc = FlakyRPC(w.dev.url, status=429, failures=8)
    cfg = sidecar.Config(
        validator_url=validator.url,
        rpc_url=rpc.url,
        contract=w.address,
        state_dir=tmp_path,
        chain_id=w.chain_id,
        confirmations=0,
        interval=0.05,
        host="127.0.0.1",
        port=devchain.free_port(),
    )
    car = sidecar.Sidecar(config=cfg, key=w.key())
    car.chain.backoff = 0.01  # 5 tries a call: the first loop turn fails, the next goes on
    task = asyncio.create_task(car.run())
    try:
        with caplog.at_level(logging.DEBUG, logger="pot"):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (
                car.intent_log.all() and car.intent_log.all()[0].state == "final"
            ):
                assert not task.done(), task.exception()
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        rpc.close()
    [intent] = car.intent_log.all()
    assert intent.state == "final"
    assert rpc.refused == 8
    assert car.metrics.registry.get_sample_value("pot_settlement_rpc_errors_total") == 1
    assert "HTTP 429" in caplog.text and SECRET not in caplog.text
    assert len(w.settled_events(alloc.task, 0)) == 1
