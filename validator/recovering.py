"""Restarting ``pbft.Replica`` from its durable log (Castro & Liskov, TOCS 2002 §6).

PBFT's safety argument assumes a correct replica never sends two different
PREPAREs (or COMMITs) for one (view, seq), and that its VIEW-CHANGE reports
everything it pre-prepared and prepared. A replica that forgot its votes in a
crash could break both. So the core logs before it sends (``actions.Logged``:
every accepted PRE-PREPARE, every PREPARE and COMMIT), the shell makes the
records durable before the messages leave, and here they come back:

- the Q set and batch bodies from the PRE-PREPAREs, the P set from the
  COMMITs sent (a replica sends COMMIT exactly when it prepared), so a later
  VIEW-CHANGE carries what the lost one would have;
- for the view it crashed in, the log entries themselves: a PRE-PREPARE for a
  (view, seq) it already voted on with another digest is then refused as
  EQUIVOCATION, and retransmission re-sends the very votes it sent;
- as primary, it proposes nothing more in the view it crashed in: its own
  PRE-PREPAREs are logged without holding up the send (``actions.Logged``), so
  the last few may be lost, and proposing again could reuse a sequence number;
  the backups' timers move the set to the next view, as for a crashed primary;
- past view 0 it comes back *view-changing* in the view it crashed in, and
  takes part in that view again only through a NEW-VIEW for it (a peer re-sends
  the one it installed on seeing the restarted replica's STATUS), one that
  contradicts none of its logged entries (``viewchanging``). The disk does not
  say whether it had installed one, and a replica that resumed the view without
  one would accept the view's PRE-PREPAREs unchecked: f faulty replicas and f+1
  restarted ones could then commit a batch other than one committed in an
  earlier view. If it had logged nothing in that view it was still changing
  views, and re-sends a VIEW-CHANGE built from its logged P and Q sets; if it
  had, it starts the timer to the next view at once, so a set restarted all
  together (none holding the NEW-VIEW) moves on;
- the batches committed since the stable checkpoint, re-executed in order.

Pure (no I/O): the shell (``persistence``, or the simulator's disk) reads the
records; this only rebuilds the replica's state from them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pot.validator import checkpointing, viewchanging
from pot.validator import messages as m
from pot.validator.actions import Action, Durable

if TYPE_CHECKING:
    from pot.validator.pbft import Replica


def recover(rep: Replica, d: Durable) -> None:
    if d.seq > 0:
        checkpointing.restore(rep, d.snapshot)
        rep.own_cks = {d.seq: (d.digest, d.snapshot)}
        rep.h = rep.last_exec = rep.next_seq = d.seq
        rep.stable_digest = d.digest
    rep.view = rep.last_normal_view = d.view
    rep.no_propose_view = d.view  # its own PRE-PREPAREs may not all have reached the disk
    known: dict[tuple[int, bytes], m.PrePrepare] = {}
    for pp in d.accepted:
        if pp.seq <= rep.h:
            continue
        known[(pp.seq, pp.digest)] = pp
        q = rep.qset.setdefault(pp.seq, {})
        q[pp.digest] = max(q.get(pp.digest, -1), pp.view)
        rep.bodies.setdefault(pp.seq, {})[pp.digest] = m.Batch(nonce=pp.nonce, requests=pp.batch)
    for v in d.sent:
        if isinstance(v, m.Commit) and v.seq > rep.h:
            prev = rep.pset.get(v.seq)
            if prev is None or prev[0] <= v.view:
                rep.pset[v.seq] = (v.view, v.digest)
    out: list[Action] = []  # re-execution only: nothing is sent during recovery
    committed = {seq: (view, digest) for seq, view, digest in d.committed if seq > rep.h}
    while rep.last_exec + 1 in committed:
        seq = rep.last_exec + 1
        view, digest = committed[seq]
        body = known.get((seq, digest))
        if body is None:
            break  # the rest comes by retransmission or state transfer
        e = rep.entry(view, seq)
        e.pp = _as_view(body, view, rep.cfg.primary(view))
        e.committed = True
        rep.execute_ready(out)
    _restore_votes(rep, d, known)
    rep.next_seq = max([rep.last_exec] + [s for s, e in rep.log.items() if e.view == rep.view])
    rep.stats["recovered_batches"] = rep.last_exec - d.seq
    if d.view > 0:
        rep.view_changing = True
        rep.last_normal_view = d.view - 1
        if not any(r.view == d.view for r in (*d.accepted, *d.sent)):
            rep.vcs[rep.id] = viewchanging.own_view_change(rep, d.view)


def _restore_votes(rep: Replica, d: Durable, known: dict[tuple[int, bytes], m.PrePrepare]) -> None:
    """The log entries of the view the replica crashed in, with its own votes."""
    view, me = rep.view, rep.id
    primary = rep.cfg.primary(view)
    for pp in d.accepted:
        if pp.view == view and pp.seq > rep.last_exec:
            # Its own, for retransmission (it proposes no more here); a primary's, so that
            # another batch at that (view, seq) is refused as EQUIVOCATION.
            e = rep.entry(view, pp.seq)
            if e.pp is None:
                e.pp = pp
                rep.track(pp.batch)
    for v in d.sent:
        if v.view != view or v.seq <= rep.last_exec:
            continue
        e = rep.entry(view, v.seq)
        body = known.get((v.seq, v.digest))
        if e.pp is None and body is not None:
            e.pp = _as_view(body, view, primary)
            rep.track(body.batch)
        if isinstance(v, m.Prepare):
            e.prepares.setdefault(v.digest, set()).add(me)
        else:
            e.commits.setdefault(v.digest, set()).add(me)
            e.prepared = e.sent_commit = True


def _as_view(pp: m.PrePrepare, view: int, primary: int) -> m.PrePrepare:
    if pp.view == view:
        return pp
    return m.PrePrepare(
        view=view,
        seq=pp.seq,
        digest=pp.digest,
        nonce=pp.nonce,
        batch=pp.batch,
        replica=primary,
        wire=pp.wire,
    )
