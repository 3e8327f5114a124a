"""Which requests a replica takes in, and how many it holds unexecuted, by count and bytes.

Client names (``client_refusal``, ``batch_refusal``): the deduplication table is replicated
state with one row per client name, so a name nobody is bound to must not get in unless the
set is configured for it (``Config.open_clients``, peers.json ``pbft.openClients``: the bench
and the simulator). Otherwise a faulty primary could order requests under made-up names and
grow every correct replica's table, and its checkpoints, without bound. In production every
request enters through a replica's API under that replica's name (``pbft.client_name``).

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

from pot.validator import signatures
from pot.validator.rejections import Rejection

if TYPE_CHECKING:
    from pot.validator import messages as m
    from pot.validator.pbft import Replica

DEDUP_WINDOW = 4096
"""Executed timestamps kept per client before the oldest fold into its floor (``slide``)."""
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


def client_refusal(rep: Replica, req: m.Request, sender: int | None) -> Rejection | None:
    """Why ``req`` (from peer ``sender``; None: this replica's own API) may not enter, if so."""
    if req.client not in rep.bound_clients:
        return None if rep.cfg.open_clients else Rejection.UNKNOWN_CLIENT
    if sender is not None:
        if req.client != rep.replica_clients[sender]:
            return Rejection.SPOOFED_SENDER  # another replica's client: see pbft.client_name
        if signatures.distrusted(rep, sender):
            return Rejection.DISTRUSTED
    if signatures.forged(rep, req, sender):
        return Rejection.FORGED_REQUEST
    return None


def batch_refusal(rep: Replica, pp: m.PrePrepare) -> Rejection | None:
    """Why a PRE-PREPARE's batch shows its primary faulty, if it does: a request under a
    replica's name without that replica's signature, or under an unbound name while the set
    is closed to them. Either way the rest of its view is refused unchecked (``forged_view``),
    or each PRE-PREPARE could put ``batch_size - 1`` requests it signed or replayed before a bad
    one, and cost a signature check apiece, without end."""
    bound, open_clients = rep.bound_clients, rep.cfg.open_clients
    for r in pp.batch:
        if r.client in bound:
            if signatures.forged(rep, r, pp.replica):
                rep.forged_view = pp.view
                return Rejection.FORGED_REQUEST
        elif not open_clients:
            rep.forged_view = pp.view
            return Rejection.UNKNOWN_CLIENT
    return None


def slide(rep: Replica, client: str) -> None:
    """Keep a client's newest DEDUP_WINDOW timestamps; the rest fold into its floor: anything
    at or below it counts as executed, so a client must not hold a request back for more
    than DEDUP_WINDOW of its own newer ones (the API's clients never do)."""
    ordered = sorted(rep.dedup[client][1])
    rep.dedup[client] = (ordered[DEDUP_WINDOW - 1], set(ordered[DEDUP_WINDOW:]))
