"""URLs that may carry secrets, made safe to log and to put in statuses.

A hosted RPC endpoint usually carries its API key in the path
(``https://eth.example/v2/KEY``), the query (``?apikey=KEY``) or the userinfo
(``https://user:KEY@host``); that is why a ValidatorSet can keep its URL in a
Secret. Anything shown to people — log lines, Kubernetes conditions and Events,
error messages — names only the scheme, host and port.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def redact(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, with ``/…`` when anything followed; never the
    userinfo, path, query or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<url>"
    if not parts.scheme or not host:
        return "<url>"
    if ":" in host:
        host = f"[{host}]"
    shown = f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")
    rest = url.split("://", 1)[1] if "://" in url else ""
    hidden = "@" in rest.split("/", 1)[0] or rest.rstrip("/").count("/") > 0 or "?" in rest
    return shown + ("/…" if hidden else "")


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted (for exception messages that quote a URL)."""
    return _URL.sub(lambda m: redact(m.group(0)), text)
