"""Signature checks in the core, and who pays for the ones that fail.

The core checks signatures on VIEW-CHANGE and NEW-VIEW (and the VIEW-CHANGEs a NEW-VIEW
carries), and on requests under a replica's client name (``pbft.client_name``). A bad
signature costs its maker nothing and the checker one ECDSA verification, so a faulty peer
could keep a correct replica's CPU busy with them at wire speed.

Every failed check is charged to the peer that sent the message. A correct replica never
sends one: it relays only what it checked itself, and the transport's per-pair MACs rule out
damage on the way. So the sender is faulty, and for ``DISTRUST_MS`` its messages that would
need a signature check are refused unchecked (``Rejection.DISTRUSTED``). A faulty peer then
costs at most one verification per ``DISTRUST_MS`` whatever it sends, and ignoring a faulty
peer's messages is within what 3f+1 tolerates. Its PREPAREs, COMMITs and CHECKPOINTs need
no signature and are still counted.

Valid request signatures are remembered (``VERIFIED_CACHE``): the same request reaches a
backup as a REQUEST and again inside a PRE-PREPARE, and retransmitted PRE-PREPAREs repeat it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pot.validator import messages as m

if TYPE_CHECKING:
    from pot.validator.pbft import Replica

DISTRUST_MS = 10_000
VERIFIED_CACHE = 8192


def distrusted(rep: Replica, sender: int) -> bool:
    """Whether ``sender`` sent a bad signature less than ``DISTRUST_MS`` ago."""
    until = rep.distrust_until.get(sender)
    return until is not None and rep.now < until


def verify(rep: Replica, sender: int | None, signer: int, data: bytes, sig: bytes) -> bool:
    """``signer``'s signature over ``data``; a failure is charged to ``sender`` (None: a
    local client, whose mistakes are its own)."""
    if rep.crypto.verify(signer, data, sig):
        return True
    if sender is not None and sender != rep.id:
        rep.distrust_until[sender] = rep.now + DISTRUST_MS
        rep.stats["distrusted"] += 1
    return False


def forged(rep: Replica, req: m.Request, sender: int | None) -> bool:
    """Whether ``req``, under a replica's client name, lacks that replica's signature."""
    rid = rep.client_ids.get(req.client)
    if rid is None:
        return False
    if not req.sig:
        return True
    data = m.request_signing_bytes(req)
    seen = m.sha256(data + req.sig)
    checked = rep.verified
    if seen in checked:  # a retransmitted PRE-PREPARE, or a REQUEST then its batch
        return False
    if not verify(rep, sender, rid, data, req.sig):
        return True
    checked[seen] = None
    if len(checked) > VERIFIED_CACHE:
        del checked[next(iter(checked))]
    return False
