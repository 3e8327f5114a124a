"""STATUS beacons and the retransmission they drive, for ``pbft.Replica`` (TOCS 2002 §5.2).

The transport may drop frames (a full queue, a reconnect), so every
``retransmit_ms`` a replica multicasts STATUS: its view, whether it is in the
normal case, its low watermark and the last sequence number it executed. A
peer that sees it behind re-sends its *own* messages for the missing sequence
numbers (a replica can only vouch for itself: relaying others' MAC'd votes
would prove nothing), a stale stable checkpoint, or the NEW-VIEW it missed.

Re-sending is for a peer that is *stuck*, not one that is merely behind: a
pipelined primary keeps up to ``max_inflight`` batches in flight, so every
beacon reports some of them missing. A peer is re-sent messages only when its
``last_exec`` has not moved since its previous STATUS (a lost message blocks
in-order execution, so a peer missing one stops there), and then only entries
older than ``retransmit_ms``. Without the first rule, a loaded n = 16 group
whose commit latency exceeds ``retransmit_ms`` re-sent a third of its
PRE-PREPAREs (measured: bench/pbft.py), making the overload worse.

An idle replica (nothing pending, nothing in flight, in a view, not catching
up) beacons only every ``IDLE_FACTOR`` periods: at n = 16 the beacons of an
idle group cost a third of a core, and there is nothing to repair. The fast
period resumes on the first tick that finds work, since the wait is measured
from the last beacon.

Client requests (PBFT §4.1: a client that hears nothing multicasts) are
re-sent for this replica's local clients, except by a primary in the normal
case: it orders them itself, and the multicast exists to start the backups'
timers against a primary that does not.

Pure (no I/O): functions of the replica that append actions to ``out``.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from pot.validator import messages as m
from pot.validator.actions import Action, Send
from pot.validator.rejections import Rejection

if TYPE_CHECKING:
    from pot.validator.pbft import Replica

MAX_RETRANSMIT = 64
IDLE_FACTOR = 4
"""An idle replica's STATUS period, in ``retransmit_ms``."""


def overdue(rep: Replica, now: int) -> bool:
    """Whether the normal case's view-change timer ran out: a pending request waited a
    timeout (PBFT §4.4), or f+1 peers of this view executed past this replica (so at least
    one correct one did) and it executed nothing for a timeout. Only the primary can send a
    lost PRE-PREPARE again, so one that leaves a replica stuck is suspected like one that
    ignores a request; without this, a replica whose primary left the view (restarted, say)
    waited for the next request to arrive before it could catch up."""
    t = rep.cfg.view_change_timeout_ms
    if rep.pending:
        oldest = rep.pending_since[next(iter(rep.pending_since))]
        if now - max(oldest, rep.view_start) >= t:
            return True
    if rep.lag is None:
        return False
    since, at = rep.lag
    if rep.last_exec > at:
        rep.lag = None  # it moved: start over
        return False
    return now - max(since, rep.view_start) >= t


def period(rep: Replica) -> int:
    """How long after its last STATUS a replica sends the next one (ms)."""
    busy = (
        rep.pending
        or rep.view_changing
        or rep.fetching
        or rep.behind is not None
        or rep.next_seq > rep.last_exec
    )
    return rep.cfg.retransmit_ms if busy else IDLE_FACTOR * rep.cfg.retransmit_ms


def beacon(rep: Replica, out: list[Action]) -> None:
    status = m.Status(
        view=rep.view,
        normal=not rep.view_changing,
        h=rep.h,
        last_exec=rep.last_exec,
        replica=rep.id,
    )
    out.append(Send(None, status))
    if rep.view_changing and rep.id in rep.vcs:
        out.append(Send(None, rep.vcs[rep.id]))
    if rep.fetching:
        out.append(Send(None, m.StateRequest(seq=rep.fetching[0], replica=rep.id)))
    if rep.is_primary and not rep.view_changing:
        return
    for key, t in list(itertools.islice(rep.local.items(), MAX_RETRANSMIT)):
        if rep.now - t >= rep.cfg.retransmit_ms and key in rep.pending:
            rep.local[key] = rep.now
            out.append(Send(None, rep.pending[key]))  # PBFT §4.1: the client multicasts


def once_per_timeout(rep: Replica, what: str, peer: int, version: int) -> bool:
    """Whether ``peer`` may be sent a large re-send (``what`` at ``version``: a STATE-REPLY for
    checkpoint h, a NEW-VIEW for view v) now, and if so note it: at most once per view-change
    timeout, or sooner for a newer version. Each copy is encoded afresh into the peer's send
    queue, which is bounded by message count, not bytes, and the asks are small (a STATUS, a
    stale VIEW-CHANGE, a STATE-REQUEST) that a faulty peer can repeat at will; a correct one
    that lost the copy asks again and gets it after the timeout."""
    last = rep.resent.get((what, peer))
    if (
        last is not None
        and last[0] == version
        and rep.now - last[1] < rep.cfg.view_change_timeout_ms
    ):
        return False
    rep.resent[(what, peer)] = (version, rep.now)
    return True


def resend_new_view(rep: Replica, to: int, out: list[Action]) -> Rejection | None:
    """The last NEW-VIEW again, to a peer whose STATUS or VIEW-CHANGE shows it missed it. It
    carries 2f+1 VIEW-CHANGEs with their batches' bodies, so it can be large: limited per peer
    (``once_per_timeout``), ``RATE_LIMITED`` in between."""
    nv = rep.last_nv
    if nv is None:
        return None
    if not once_per_timeout(rep, "new-view", to, nv.view):
        return Rejection.RATE_LIMITED
    out.append(Send(to, nv))
    return None


def on_status(rep: Replica, s: m.Status, out: list[Action]) -> Rejection | None:
    to = s.replica
    if s.h < rep.h:  # checkpoints are view-independent: a replica stuck in a view change
        # (or restarted) still catches up by state transfer (TOCS §5.3)
        out.append(Send(to, m.Checkpoint(seq=rep.h, digest=rep.stable_digest, replica=rep.id)))
    if rep.view_changing:
        return None
    if (s.view < rep.view or (s.view == rep.view and not s.normal)) and rep.last_nv is not None:
        return resend_new_view(rep, to, out)
    if s.view != rep.view:
        return None
    before, rep.peer_exec[to] = rep.peer_exec.get(to), s.last_exec
    if rep.lag is None and s.normal and s.last_exec > rep.last_exec:
        ahead = sum(x > rep.last_exec for x in rep.peer_exec.values())
        if ahead >= rep.cfg.f + 1:
            rep.lag = (rep.now, rep.last_exec)
    if before != s.last_exec:
        return None  # moving: what it lacks is in flight, not lost
    sent = 0
    old = rep.now - rep.cfg.retransmit_ms
    for seq in range(max(s.last_exec, rep.h) + 1, rep.h + rep.cfg.window + 1):
        e = rep.log.get(seq)
        if e is None:
            if seq > rep.next_seq:
                break
            continue
        if e.view != rep.view or e.pp is None or e.since > old:
            continue
        if sent >= MAX_RETRANSMIT:
            break
        sent += 1
        d = e.pp.digest
        if rep.is_primary:
            out.append(Send(to, e.pp))
        elif rep.id in e.prepares.get(d, ()):
            out.append(Send(to, m.Prepare(view=e.view, seq=seq, digest=d, replica=rep.id)))
        if e.sent_commit:
            out.append(Send(to, m.Commit(view=e.view, seq=seq, digest=d, replica=rep.id)))
    return None
