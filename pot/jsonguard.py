"""Refuse deeply nested JSON before ``json.loads`` sees it.

The C decoder recurses once per ``[`` or ``{``; where the interpreter's
recursion limit has been raised (py_ecc raises it to 100,000 when imported),
deep enough input overflows the C stack and kills the process with SIGSEGV
instead of raising. Everything that decodes JSON from a peer, a miner or a
file (the validator's HTTP API and ops, proof segments) asks ``too_deep``
first.
"""

from __future__ import annotations

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def too_deep(data: bytes, limit: int) -> bool:
    """Whether ``data`` nests brackets deeper than ``limit``. Brackets inside strings count
    too: only a document whose own strings are full of unbalanced brackets can be refused
    by mistake, and balanced ones (an IPv6 address in a URL) never add up."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    depth = 0
    for ch in data.translate(None, _NOT_BRACKETS):
        depth += 1 if ch in (0x5B, 0x7B) else -1
        if depth > limit:
            return True
    return False
