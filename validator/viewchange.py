"""The view-change decision procedure (pure functions).

We follow the TOCS 2002 view change (Castro & Liskov, §4.5), not the OSDI 1999
one: VIEW-CHANGE messages carry *claims* (the P and Q sets) instead of
certificates of 2f+1 signed PREPAREs, so the normal case needs no signatures at
all, only per-pair MACs. The paper makes claims trustworthy with
VIEW-CHANGE-ACKs; we sign VIEW-CHANGE messages instead (cheap: they are rare),
so the new primary can put them in its NEW-VIEW and every backup re-runs the
very same decision on them. ``decide`` is deterministic in its input, which is
what makes that check meaningful.

Decision (TOCS §4.5.2), for the set S of view changes the primary holds:

- checkpoint: the highest (n, d) such that 2f+1 messages have h <= n and f+1
  messages list (n, d) in C (so at least one correct replica computed d);
- for each seq n above it, pick digest d prepared at view v in some P if
  A1: 2f+1 messages with h < n have, at n, no P entry or one with view < v or
      exactly (d, v), and
  A2: f+1 messages have a Q entry (n, d, v') with v' >= v, and
  A3: the batch of d is known (every Q entry carries its batch here);
  else the null request if B: 2f+1 messages with h < n have no P entry at n;
  else the decision must wait for more view changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pot.validator import messages as m
from pot.validator.rejections import Rejection


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What the new view starts from: a checkpoint and one digest per sequence number."""

    checkpoint: tuple[int, bytes]
    chosen: tuple[tuple[int, bytes], ...]


def validate(vc: m.ViewChange, *, n: int, window: int) -> Rejection | None:
    """Structural checks of one VIEW-CHANGE (signature checked by the caller)."""
    if vc.replica >= n:
        return Rejection.UNKNOWN_PEER
    lo, hi = vc.h, vc.h + window
    cks = [s for s, _ in vc.checkpoints]
    if len(set(cks)) != len(cks) or any(s < vc.h or s > hi for s in cks) or vc.h not in cks:
        return Rejection.INVALID_VIEW_CHANGE
    pseqs = [e.seq for e in vc.prepared]
    if len(set(pseqs)) != len(pseqs):
        return Rejection.INVALID_VIEW_CHANGE
    bodies = {b.digest() for b in vc.batches}
    if len(bodies) != len(vc.batches):
        return Rejection.INVALID_VIEW_CHANGE
    qkeys = [(e.seq, e.digest) for e in vc.preprepared]
    if len(set(qkeys)) != len(qkeys):
        return Rejection.INVALID_VIEW_CHANGE
    for e in (*vc.prepared, *vc.preprepared):
        if not lo < e.seq <= hi or e.view >= vc.view:
            return Rejection.INVALID_VIEW_CHANGE
    for e in vc.preprepared:
        if e.digest != m.NULL_DIGEST and e.digest not in bodies:
            return Rejection.INVALID_VIEW_CHANGE
    return None


def bodies(vcs: Iterable[m.ViewChange]) -> dict[bytes, m.Batch]:
    """Every batch body the view changes carry, by digest."""
    out = {m.NULL_DIGEST: m.NULL_BATCH}
    for vc in vcs:
        for b in vc.batches:
            out.setdefault(b.digest(), b)
    return out


def decide(vcs: Iterable[m.ViewChange], *, f: int, window: int) -> Decision | None:
    """The new view's starting point, or None while S does not yet determine it."""
    s = list(vcs)
    quorum = 2 * f + 1
    if len(s) < quorum:
        return None
    known = bodies(s)
    # Checkpoint selection: highest first, deterministic tie-break on digest.
    candidates = sorted({c for vc in s for c in vc.checkpoints}, key=lambda c: (-c[0], c[1]))
    chosen_ck: tuple[int, bytes] | None = None
    for seq, d in candidates:
        low = sum(1 for vc in s if vc.h <= seq)
        have = sum(1 for vc in s if (seq, d) in vc.checkpoints)
        if low >= quorum and have >= f + 1:
            chosen_ck = (seq, d)
            break
    if chosen_ck is None:
        return None
    h = chosen_ck[0]
    pmaps = [{e.seq: e for e in vc.prepared} for vc in s]
    qmaps: list[dict[tuple[int, bytes], int]] = [
        {(e.seq, e.digest): e.view for e in vc.preprepared} for vc in s
    ]
    top = max((e.seq for vc in s for e in vc.prepared if h < e.seq <= h + window), default=h)
    chosen: list[tuple[int, bytes]] = []
    for seq in range(h + 1, top + 1):
        cands = sorted(
            {(pm[seq].view, pm[seq].digest) for pm in pmaps if seq in pm},
            key=lambda c: (-c[0], c[1]),
        )
        pick: bytes | None = None
        for view, d in cands:
            a1 = sum(
                1
                for vc, pm in zip(s, pmaps, strict=True)
                if vc.h < seq
                and (
                    seq not in pm
                    or pm[seq].view < view
                    or (pm[seq].view == view and pm[seq].digest == d)
                )
            )
            a2 = sum(1 for qm in qmaps if qm.get((seq, d), -1) >= view)
            if a1 >= quorum and a2 >= f + 1 and d in known:
                pick = d
                break
        if pick is None:
            b = sum(1 for vc, pm in zip(s, pmaps, strict=True) if vc.h < seq and seq not in pm)
            if b < quorum:
                return None
            pick = m.NULL_DIGEST
        chosen.append((seq, pick))
    return Decision(checkpoint=chosen_ck, chosen=tuple(chosen))
