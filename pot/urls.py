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


def http_target(url: str) -> tuple[str, str, int | None, str]:
    """``(scheme, host, port, path)`` of an absolute ``http``/``https`` URL; ValueError saying
    what is wrong otherwise.

    The policy for URLs a peer hands us to fetch from (a segment's ``storeUrl``): no other
    scheme (``file:``, ``ftp:``, ``data:`` would read what the peer names on our side), printable
    ASCII only, a host, no userinfo, query or fragment (nothing of ours is appended to
    them)."""
    if not url.isascii() or not url.isprintable() or " " in url:
        raise ValueError("not printable ASCII without spaces")
    parts = urlsplit(url)  # ValueError: an unclosed IPv6 bracket
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"scheme {parts.scheme!r} is not http or https")
    port = parts.port  # ValueError: out of range or not a number
    if not parts.hostname or "@" in parts.netloc:
        raise ValueError("no host, or a user name")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ValueError("a query or fragment")
    return parts.scheme, parts.hostname, port, parts.path.rstrip("/")
