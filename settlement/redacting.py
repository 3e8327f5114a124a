"""Keeping the chain RPC URL's secret parts out of everything the settlement code shows.

A hosted RPC endpoint carries its API key in the path, query or userinfo, which is why a
ValidatorSet can keep the URL in a Secret (``chain.rpcSecretRef``). ``pot.urls.redact_text``
catches whole URLs in a message, but requests and urllib3 also quote the bare path
("Max retries exceeded with url: /v2/KEY") and web3/urllib3 log the full URL at DEBUG. So
messages that may quote the URL go through ``scrub`` with the URL at hand, and
``python -m pot.settlement`` installs ``LogScrubber`` on its log handlers for whatever a
library logs.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from pot import urls

HIDDEN = "…"


def _secret_parts(url: str) -> list[str]:
    """Substrings of ``url`` that may carry a secret, longest first."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return [url] if url else []
    found = [url]
    rest = url.split("://", 1)[1] if "://" in url else url
    if "@" in rest.split("/", 1)[0]:
        found.append(rest.split("/", 1)[0].rsplit("@", 1)[0])  # the userinfo
    if password:
        found.append(password)
    if parts.query:
        found += [parts.query, f"{parts.path}?{parts.query}"]
    if parts.path.strip("/"):
        found.append(parts.path)
    return sorted({s for s in found if s}, key=len, reverse=True)


def scrub(text: str, url: str | None) -> str:
    """``text`` with every URL redacted and, if ``url`` is given, its secret parts hidden."""
    if url:
        for secret in _secret_parts(url):
            text = text.replace(secret, urls.redact(url) if secret == url else HIDDEN)
    return urls.redact_text(text)


class LogScrubber(logging.Filter):
    """A handler filter: the formatted message (and traceback) of every record, scrubbed."""

    def __init__(self, url: str | None) -> None:
        super().__init__()
        self.url = url

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage(), self.url)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text, self.url)
        return True


def install(url: str | None, logger: logging.Logger | None = None) -> LogScrubber:
    """Add a ``LogScrubber`` for ``url`` to every handler of ``logger`` (default: root)."""
    scrubber = LogScrubber(url)
    for handler in (logger or logging.getLogger()).handlers:
        handler.addFilter(scrubber)
    return scrubber


def uninstall(scrubber: LogScrubber, logger: logging.Logger | None = None) -> None:
    """Remove ``scrubber`` from the handlers ``install`` gave it to."""
    for handler in (logger or logging.getLogger()).handlers:
        handler.removeFilter(scrubber)
