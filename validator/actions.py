"""What the pure PBFT core asks its shell to do, and what the shell hands back after a crash.

The core (``pbft.Replica``) never performs I/O: every call returns a list of
these actions, which the shell (``replica.Node``, or the simulator) performs
*in order*. Order matters for one rule of the protocol: PBFT requires a replica
to log a message to stable storage before sending it (Castro & Liskov, TOCS
2002 §6 on recovery), so the core emits ``Logged`` for every PRE-PREPARE it
accepts and every PREPARE/COMMIT it sends, ahead of the ``Send``; the shell
makes those records durable (one fsync per group of them) before any later
``Send`` leaves (except the primary's own PRE-PREPARE: see ``Logged.gate``). ``Durable`` is what such records give back on restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from pot.validator import messages as m


@dataclass(frozen=True, slots=True)
class Send:
    to: int | None
    """A replica id, or None for every other replica."""
    msg: m.Message


@dataclass(frozen=True, slots=True)
class Executed:
    """The requests of one committed batch that this replica executed (duplicates of
    earlier ones are skipped), with their results, in order: one action per batch, so a
    replica with no client waiting pays nothing per request in its shell."""

    seq: int
    requests: tuple[m.Request, ...]
    results: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Committed:
    seq: int
    view: int
    digest: bytes
    batch: m.Batch


@dataclass(frozen=True, slots=True)
class Stable:
    seq: int
    digest: bytes
    snapshot: bytes


@dataclass(frozen=True, slots=True)
class ViewEntered:
    view: int


@dataclass(frozen=True, slots=True)
class Logged:
    """A record for the log: a PRE-PREPARE this replica accepted (or, as primary, sent), or a
    PREPARE/COMMIT it is about to send. With ``gate`` it must be durable before any later
    ``Send`` leaves; without (the primary's own PRE-PREPARE), it only rides with the next group:
    a primary that restarts never proposes again in the view it crashed in (``recovering``),
    so it cannot contradict a PRE-PREPARE it forgot, and the fsync leaves the critical path."""

    msg: m.PrePrepare | m.Prepare | m.Commit
    gate: bool = True


Action: TypeAlias = Send | Executed | Committed | Stable | ViewEntered | Logged


@dataclass(frozen=True, slots=True, kw_only=True)
class Durable:
    """What a replica recovers from disk: the stable checkpoint and the log after it."""

    view: int
    seq: int
    digest: bytes
    snapshot: bytes
    accepted: tuple[m.PrePrepare, ...] = ()
    """PRE-PREPAREs accepted above ``seq`` (the Q set and the batch bodies), in log order."""
    sent: tuple[m.Prepare | m.Commit, ...] = ()
    """Votes this replica sent above ``seq``: it must never contradict them."""
    committed: tuple[tuple[int, int, bytes], ...] = ()
    """(seq, view, digest) committed above ``seq``, in order."""
