"""How many requests a replica holds that it has not executed yet, by count and by bytes.

Requests under a client name that is not a replica's are not authenticated (PBFT lets
any client send them), and a faulty peer can relay as many as it likes: each is held as
pending until executed, so the backlog is bounded, by count (``MAX_PENDING``) and by the
bytes of their ops (``MAX_PENDING_BYTES``, which count alone would leave at 200,000 ×
256 KiB). Past either, a REQUEST is refused (``OVERSIZED``); its client retransmits.

The byte total is an upper bound kept off the hot path: executing a request does not
subtract from it. When an add would pass the cap, the pending ops are counted again (at
most once per ``RECOUNT_MS``, so a flood at the cap costs one count per period, not one
per request).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pot.validator.pbft import Replica

MAX_PENDING = 200_000
MAX_PENDING_BYTES = 256 << 20
RECOUNT_MS = 500


def admit(rep: Replica, size: int) -> bool:
    """Whether one more pending request with a ``size``-byte op fits; if so, counts it."""
    if len(rep.pending) >= MAX_PENDING:
        return False
    if rep.pending_bytes + size > MAX_PENDING_BYTES:
        if rep.now - rep.pending_recount < RECOUNT_MS:
            return False
        rep.pending_recount = rep.now
        rep.pending_bytes = sum(len(r.op) for r in rep.pending.values())
        if rep.pending_bytes + size > MAX_PENDING_BYTES:
            return False
    rep.pending_bytes += size
    return True
