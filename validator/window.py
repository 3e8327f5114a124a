"""The bytes of requests a replica holds in its window, bounded so view changes fit a frame.

A VIEW-CHANGE carries the body of every batch this replica pre-prepared between its
watermarks (h, h + L], and a NEW-VIEW carries up to n VIEW-CHANGEs; a frame holds at most
``FRAME`` bytes (``transport.MAX_FRAME``). Without a bound the worst case was far past it: a
request is up to ``MAX_REQUEST`` bytes (a 256 KiB op), a batch up to ``batchSize`` (100) of
them, the window L = 2K = 128 batches: about 3.4 GB per VIEW-CHANGE, and n times that per
NEW-VIEW. The frame was dropped, and no view change could ever complete (liveness lost).

So each replica counts ``Replica.window_bytes``: what the PRE-PREPAREs of its current view
above h add to its VIEW-CHANGE (``cost``: each one's Q entry and batch body). ``limit`` is
what is left of an n-th of the frame once the parts of a VIEW-CHANGE that do not depend on
requests are counted at their largest (``vc_fixed``: checkpoints, a P and a Q entry per
sequence number, an empty batch per sequence number, the signature) along with the
NEW-VIEW's own (``nv_fixed``). A primary packs no request past it; a backup refuses a
PRE-PREPARE that would pass it (``WINDOW_FULL``), so it does not depend on the primary
being correct. A correct primary never passes it, and a backup counts the same PRE-PREPAREs
(one lagging behind a stable checkpoint counts more, and takes the PRE-PREPARE again from the
STATUS retransmission once it caught up, as with the sequence-number watermark; the seeded
simulator counts any other refusal of a correct primary's, ``Result.wrongful_window_full``).
Batches that hold no request are exempt on both sides (``vc_fixed`` counts one per seq),
even where the count is already past the limit (a NEW-VIEW's re-proposals can take it there,
see below; refusing them left no way to the checkpoint, and every view re-proposed the same):
when the next request does not fit, the primary orders empty batches, which carry execution
to the next checkpoint; once stable, the bytes below it are released. ``pbft.Config``
refuses a tuning whose limit could not hold one largest request.

What this bounds is one view's PRE-PREPAREs. A VIEW-CHANGE also carries bodies a replica
pre-prepared in earlier views at sequence numbers the window still holds (each view
change that leaves them unprepared can add up to ``limit`` more): bounding those too needs
VIEW-CHANGEs that carry digests only (docs/protocol.md, "VIEW-CHANGE size").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pot.validator import messages as m

if TYPE_CHECKING:
    from pot.validator.pbft import Replica

FRAME = 32 << 20
"""The largest frame the transport sends (``transport.MAX_FRAME``), length prefix included."""
ENTRY = 8 + 32 + 8
"""A P or Q entry: seq, digest, view."""
MAX_REQUEST = 1 + m.MAX_CLIENT_LEN + 12 + m.MAX_OP_BYTES + 1 + m.MAX_REQUEST_SIG
"""The encoding of the largest request inside a batch."""
BATCH_OVERHEAD = ENTRY + 1 + m.MAX_NONCE + 4
"""A batch's Q entry, nonce and request count: all an empty batch costs."""


def vc_fixed(window: int) -> int:
    """The most bytes of a VIEW-CHANGE (type byte and frame length prefix included) that do
    not depend on requests: head, up to 3 checkpoints (h, h + K, h + 2K), a P entry and an
    empty batch per sequence number, list counts, the largest signature."""
    checkpoints = 4 + 3 * (8 + 32)
    return (
        4 + 1 + 18 + checkpoints + 4 + window * ENTRY + 4 + 4 + window * BATCH_OVERHEAD + 2
    ) + m.MAX_SIGNATURE


def nv_fixed(window: int) -> int:
    """A NEW-VIEW's own bytes besides its VIEW-CHANGEs: head, a chosen pair per sequence
    number, list counts, the largest signature, the frame length prefix."""
    return 4 + 51 + 4 + window * 40 + 4 + 2 + m.MAX_SIGNATURE


def limit(n: int, window: int) -> int:
    """The most ``cost`` a replica's current-view PRE-PREPAREs above h may add up to."""
    return (FRAME - nv_fixed(window)) // n - vc_fixed(window)


def cost(pp: m.PrePrepare) -> int:
    """What a PRE-PREPARE adds to its replica's VIEW-CHANGE (0 for a batch with no request)."""
    return ENTRY + 1 + len(pp.nonce) + len(pp.batch_wire()) if pp.batch else 0


REQUEST_FIXED = 1 + m.MAX_CLIENT_LEN + 12 + 1
"""A request's bytes in a batch besides its op and signature, with the longest client name."""


def request_cost(r: m.Request) -> int:
    """At most what a request adds to a batch's encoding (the client name counted at its
    longest: the primary then never passes the limit, and needs no ``str.encode`` per
    request on its hot path; backups count the exact bytes, ``cost``)."""
    return REQUEST_FIXED + len(r.op) + len(r.sig)


def count(rep: Replica, old: m.PrePrepare | None, pp: m.PrePrepare) -> None:
    """``pp`` is accepted in place of ``old`` (None, or the one a restarted replica reloaded
    from its log and a NEW-VIEW of its view installs again): counted once."""
    rep.window_bytes += cost(pp) - (cost(old) if old is not None else 0)


def recount(rep: Replica) -> None:
    """``window_bytes`` from the log (after garbage collection, a view change, a restart)."""
    rep.window_bytes = sum(
        cost(e.pp)
        for s, e in rep.log.items()
        if e.pp is not None and e.view == rep.view and s > rep.h
    )


def pack(rep: Replica) -> list[m.Request]:
    """The primary's next batch, off the front of its queue: up to ``batch_size`` requests, no
    more than fit under ``limit`` (none: an empty batch, which carries execution on to the
    next checkpoint and so frees the window)."""
    queue, executed = rep.queue, rep.executed
    batch: list[m.Request] = []
    room = rep.window_limit - rep.window_bytes - BATCH_OVERHEAD
    fixed = REQUEST_FIXED
    while queue and len(batch) < rep.cfg.batch_size:
        key = next(iter(queue))
        req = queue[key]
        size = fixed + len(req.op) + len(req.sig)  # request_cost, inlined (once per request)
        if size > room:
            break
        del queue[key]
        if not executed(key):
            batch.append(req)
            room -= size
    return batch
