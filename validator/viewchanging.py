"""Moving between views: VIEW-CHANGE / NEW-VIEW handling for ``pbft.Replica`` (TOCS 2002 §4.5).

``viewchange`` holds the pure decision (which checkpoint and which batch at
each sequence number a new view starts from); this module is the replica's
side of it: start a view change on a timeout or when f+1 replicas ask for a
higher view, collect signed VIEW-CHANGEs, as the new primary build and sign
NEW-VIEW, as a backup re-run the decision on the NEW-VIEW's own VIEW-CHANGEs
and install the view.

Pure (no I/O): functions of the replica that append actions to ``out``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from pot.validator import checkpointing, retransmitting, signatures, viewchange, window
from pot.validator import messages as m
from pot.validator.actions import Action, Send, ViewEntered
from pot.validator.rejections import Rejection

if TYPE_CHECKING:
    from pot.validator.pbft import Replica


def start(rep: Replica, view: int, out: list[Action]) -> None:
    if view <= rep.view:
        return
    rep.stats["view_changes"] += 1
    rep.view = view
    rep.view_changing = True
    rep.vc_quorum_at = None
    vc = rep.vcs[rep.id] = own_view_change(rep, view)
    out.append(ViewEntered(view))
    out.append(Send(None, vc))
    try_new_view(rep, out)


def own_view_change(rep: Replica, view: int) -> m.ViewChange:
    """This replica's signed VIEW-CHANGE for ``view``, from its checkpoints and P and Q sets."""
    lo, hi = rep.h, rep.h + rep.cfg.window
    prepared = tuple(
        m.PEntry(seq=s, digest=d, view=v) for s, (v, d) in sorted(rep.pset.items()) if lo < s <= hi
    )
    pre = tuple(
        m.PEntry(seq=s, digest=d, view=v)
        for s, dm in sorted(rep.qset.items())
        if lo < s <= hi
        for d, v in sorted(dm.items())
    )
    batches = {
        d: b
        for s, bm in rep.bodies.items()
        if lo < s <= hi
        for d, b in bm.items()
        if d in rep.qset.get(s, {}) and d != m.NULL_DIGEST
    }
    vc = m.ViewChange(
        view=view,
        h=rep.h,
        checkpoints=tuple((s, d) for s, (d, _) in sorted(rep.own_cks.items()) if s >= rep.h),
        prepared=prepared,
        preprepared=pre,
        batches=tuple(batches[d] for d in sorted(batches)),
        replica=rep.id,
    )
    return replace(vc, signature=rep.crypto.sign(m.signing_bytes(vc)))


def on_view_change(rep: Replica, vc: m.ViewChange, out: list[Action]) -> Rejection | None:
    if vc.view < rep.view or (vc.view == rep.view and not rep.view_changing):
        if rep.last_nv is not None and rep.last_nv.view >= vc.view:  # it missed the NEW-VIEW
            return retransmitting.resend_new_view(rep, vc.replica, out) or Rejection.STALE
        return Rejection.STALE
    old = rep.vcs.get(vc.replica)
    if old is not None and old.view >= vc.view:
        return Rejection.DUPLICATE
    bad = viewchange.validate(vc, n=rep.cfg.n, window=rep.cfg.window)
    if bad is not None:
        return bad
    if not signatures.verify(rep, vc.replica, vc.replica, m.signing_bytes(vc), vc.signature):
        return Rejection.BAD_SIGNATURE
    rep.vcs[vc.replica] = vc
    # Liveness (§4.5.2): f+1 replicas ask for a higher view → join the smallest of them.
    higher = sorted(v.view for r, v in rep.vcs.items() if r != rep.id and v.view > rep.view)
    if len(higher) >= rep.cfg.f + 1:
        start(rep, higher[0], out)
    elif rep.view_changing and vc.view == rep.view:
        try_new_view(rep, out)
    return None


def count(rep: Replica) -> int:
    # A VIEW-CHANGE for a later view also gave up on this one.
    return sum(1 for vc in rep.vcs.values() if vc.view >= rep.view)


def try_new_view(rep: Replica, out: list[Action]) -> None:
    if not rep.view_changing or rep.cfg.primary(rep.view) != rep.id:
        return
    if rep.view <= rep.no_propose_view:
        # Restarted in this view (``recovering``): it may have sent a NEW-VIEW already, and its
        # own PRE-PREPAREs (those of that NEW-VIEW too) are logged without a gate, so a second
        # one could contradict the first. Its peers re-send the first, or time out to the next.
        return
    s = [vc for vc in rep.vcs.values() if vc.view == rep.view]
    decision = viewchange.decide(s, f=rep.cfg.f, window=rep.cfg.window)
    if decision is None:
        return
    nv = m.NewView(
        view=rep.view,
        view_changes=tuple(sorted(s, key=lambda v: v.replica)),
        checkpoint=decision.checkpoint,
        chosen=decision.chosen,
        replica=rep.id,
    )
    nv = replace(nv, signature=rep.crypto.sign(m.signing_bytes(nv)))
    out.append(Send(None, nv))
    install(rep, nv, out)


def on_new_view(rep: Replica, nv: m.NewView, sender: int, out: list[Action]) -> Rejection | None:
    if nv.replica != rep.cfg.primary(nv.view):
        return Rejection.NOT_PRIMARY
    if nv.view < rep.view or (nv.view == rep.view and not rep.view_changing):
        return Rejection.STALE
    if not signatures.verify(rep, sender, nv.replica, m.signing_bytes(nv), nv.signature):
        return Rejection.BAD_SIGNATURE
    senders = [vc.replica for vc in nv.view_changes]
    if len(set(senders)) != len(senders) or len(senders) < rep.cfg.quorum:
        return Rejection.INVALID_NEW_VIEW
    for vc in nv.view_changes:
        if vc.view != nv.view or viewchange.validate(vc, n=rep.cfg.n, window=rep.cfg.window):
            return Rejection.INVALID_NEW_VIEW
        if not signatures.verify(rep, sender, vc.replica, m.signing_bytes(vc), vc.signature):
            return Rejection.BAD_SIGNATURE
    decision = viewchange.decide(nv.view_changes, f=rep.cfg.f, window=rep.cfg.window)
    if decision is None or decision.checkpoint != nv.checkpoint or decision.chosen != nv.chosen:
        return Rejection.INVALID_NEW_VIEW
    if _contradicts(rep, nv):
        return Rejection.EQUIVOCATION
    if nv.view > rep.view:
        out.append(ViewEntered(nv.view))
    install(rep, nv, out)
    return None


def _contradicts(rep: Replica, nv: m.NewView) -> bool:
    """Whether ``nv`` puts another batch at a sequence number where this replica already
    accepted or voted for one in ``nv.view``. Only a replica restarted in that view holds such
    entries (``recovering``: it waits for the view's NEW-VIEW again); a faulty primary's second,
    different NEW-VIEW must not make it contradict what it sent before the crash."""
    log = rep.log
    for seq, d in nv.chosen:
        e = log.get(seq)
        if e is None or e.view != nv.view:
            continue
        if e.pp is not None and e.pp.digest != d:
            return True
        for votes in (e.prepares, e.commits):
            if any(rep.id in who for dd, who in votes.items() if dd != d):
                return True
    return False


def install(rep: Replica, nv: m.NewView, out: list[Action]) -> None:
    """Enter view ``nv.view`` from its decision (TOCS §4.5.3)."""
    rep.stats["new_views"] += 1
    rep.view = nv.view
    rep.view_changing = False
    rep.last_normal_view = nv.view
    rep.view_start = rep.now
    rep.last_nv = nv
    ck_seq, ck_d = nv.checkpoint
    rep.trusted = (ck_seq, ck_d)
    bodies = viewchange.bodies(nv.view_changes)
    # Before anything below can reach try_propose (make_stable and execute_ready do): as the
    # new primary, never propose a sequence number the NEW-VIEW already fills, nor a request
    # it carries. (Setting next_seq only at the end let a checkpoint made stable here propose
    # at a chosen sequence number, and then propose it again: the simulator caught a primary
    # equivocating with itself.)
    # (A replica restarted in this view may hold its entries beyond the NEW-VIEW's.)
    rep.next_seq = max(
        [
            ck_seq,
            rep.last_exec,
            *(seq for seq, _ in nv.chosen),
            *(s for s, e in rep.log.items() if e.view == nv.view and e.pp is not None),
        ]
    )
    # Nor propose before the re-proposals below count in ``window_bytes``: packed against the
    # window without them (a checkpoint made stable here proposes), its batches and they took
    # it past ``window.limit``, and the backups, counting them first, refused WINDOW_FULL. So
    # the queue stays empty until they are in.
    rep.queue = {}
    for s in [s for s, e in rep.log.items() if e.view < nv.view]:
        del rep.log[s]
    window.recount(rep)  # this view's PRE-PREPAREs only (``window``)
    if ck_seq > rep.h:
        own = rep.own_cks.get(ck_seq)
        if own is not None and own[0] == ck_d:
            checkpointing.make_stable(rep, ck_seq, ck_d, out)
        elif rep.last_exec < ck_seq:
            checkpointing.fetch(rep, ck_seq, ck_d, out)
    primary = rep.cfg.primary(nv.view)
    for seq, d in nv.chosen:
        if seq <= rep.h:
            continue
        b = bodies[d]
        pp = m.PrePrepare(
            view=nv.view, seq=seq, digest=d, nonce=b.nonce, batch=b.requests, replica=primary
        )
        rep.accept_pre_prepare(pp, out)
    in_flight = {r.key for _, d in nv.chosen for r in bodies[d].requests}
    rep.queue = {k: r for k, r in rep.pending.items() if k not in in_flight}
    rep.execute_ready(out)
    rep.try_propose(out)
