"""RPC URLs never reach logs or statuses with their secrets (pot.urls)."""

from __future__ import annotations

import pytest

from pot import urls


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
        ("http://127.0.0.1:8545/", "http://127.0.0.1:8545"),
        ("https://eth-mainnet.example/v2/SECRETKEY", "https://eth-mainnet.example/…"),
        ("https://rpc.example/?apikey=SECRETKEY", "https://rpc.example/…"),
        ("https://user:SECRETKEY@rpc.example:8443", "https://rpc.example:8443/…"),
        ("http://[::1]:8545/SECRETKEY", "http://[::1]:8545/…"),
        ("not a url SECRETKEY", "<url>"),
        ("http://host:notaport/SECRETKEY", "<url>"),
    ],
)
def test_redact_keeps_only_scheme_host_port(url: str, shown: str) -> None:
    assert urls.redact(url) == shown
    assert "SECRETKEY" not in urls.redact(url)


def test_redact_text_finds_urls_in_messages() -> None:
    msg = "429 Client Error: Too Many Requests for url: https://x.example/v3/SECRETKEY (retrying)"
    out = urls.redact_text(msg)
    assert "SECRETKEY" not in out
    assert out == "429 Client Error: Too Many Requests for url: https://x.example/… (retrying)"
