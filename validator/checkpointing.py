"""Checkpoints, watermarks, log garbage collection and state transfer, for ``pbft.Replica``.

PBFT §4.3: every K sequence numbers a replica hashes its state and multicasts
CHECKPOINT; 2f+1 matching ones make the checkpoint *stable*, which moves the
low watermark h and discards the log, the P/Q sets and older snapshots below
it. A replica that learns of a stable checkpoint above what it executed
fetches the snapshot (TOCS §5.3, simplified to whole snapshots) and installs
it only if it hashes to a digest f+1 replicas vouched for (so at least one
correct replica computed it), or the one a valid NEW-VIEW named.

Pure (no I/O): functions of the replica that append actions to ``out``.
"""

from __future__ import annotations

import json
import logging
import struct
from typing import TYPE_CHECKING

from pot.validator import messages as m
from pot.validator import retransmitting, window
from pot.validator.actions import Action, Send, Stable
from pot.validator.rejections import Rejection

if TYPE_CHECKING:
    from pot.validator.pbft import Replica

log = logging.getLogger(__name__)


SNAPSHOT_MAGIC = b"pot-pbft-snapshot/2\n"
_HEAD = struct.Struct(">I")


def snapshot(rep: Replica) -> bytes:
    """The replicated state: the per-client deduplication windows and the application.

    ``SNAPSHOT_MAGIC ‖ len(dedup):u32 ‖ dedup ‖ app``: the windows as canonical JSON, then the
    application's own snapshot bytes as they are (hex inside the JSON, as before, doubled the
    size of every checkpoint, state transfer and stable snapshot on disk)."""
    dedup = {c: [floor, sorted(s)] for c, (floor, s) in sorted(rep.dedup.items())}
    head = json.dumps(dedup, separators=(",", ":"), sort_keys=True).encode()
    return b"".join((SNAPSHOT_MAGIC, _HEAD.pack(len(head)), head, rep.app.snapshot()))


def restore(rep: Replica, data: bytes) -> None:
    """Install ``data`` (from ``snapshot``); ValueError, and nothing changed, if it is not one."""
    if not data.startswith(SNAPSHOT_MAGIC):
        raise ValueError("not a pot PBFT snapshot (or an older format)")
    at = len(SNAPSHOT_MAGIC)
    try:
        (n,) = _HEAD.unpack_from(data, at)
    except struct.error as exc:
        raise ValueError("snapshot cut short") from exc
    at += _HEAD.size
    if at + n > len(data):
        raise ValueError("snapshot cut short")
    doc = json.loads(data[at : at + n])
    if not isinstance(doc, dict):
        raise ValueError("snapshot's deduplication windows are not an object")
    dedup = {c: (int(fl), {int(t) for t in ts}) for c, (fl, ts) in doc.items()}
    rep.app.restore(data[at + n :])
    rep.dedup = dedup


def take(rep: Replica, seq: int, out: list[Action]) -> None:
    snap = snapshot(rep)
    d = m.sha256(snap)
    rep.own_cks[seq] = (d, snap)
    rep.claims.setdefault(rep.id, {})[seq] = d
    out.append(Send(None, m.Checkpoint(seq=seq, digest=d, replica=rep.id)))
    check_stable(rep, seq, d, out)


def on_checkpoint(rep: Replica, c: m.Checkpoint, out: list[Action]) -> Rejection | None:
    if c.seq <= rep.h:
        return Rejection.STALE
    mine = rep.claims.setdefault(c.replica, {})
    if mine.get(c.seq) == c.digest:
        return Rejection.DUPLICATE
    mine[c.seq] = c.digest
    while len(mine) > 4:  # bounded: a Byzantine replica cannot grow our memory
        del mine[min(mine)]
    check_stable(rep, c.seq, c.digest, out)
    return None


def support(rep: Replica, seq: int, d: bytes) -> int:
    return sum(1 for cl in rep.claims.values() if cl.get(seq) == d)


def check_stable(rep: Replica, seq: int, d: bytes, out: list[Action]) -> None:
    if seq <= rep.h or support(rep, seq, d) < rep.cfg.quorum:
        return
    own = rep.own_cks.get(seq)
    if own is not None and own[0] == d:
        make_stable(rep, seq, d, out)
    elif rep.last_exec < seq and (rep.behind is None or rep.behind[0] < seq):
        rep.behind = (seq, d)  # fetched on the next tick unless execution catches up
    elif own is not None:
        log.error("replica %d: own checkpoint %d differs from the quorum's", rep.id, seq)


def make_stable(rep: Replica, seq: int, d: bytes, out: list[Action]) -> None:
    """PBFT §4.3: a stable checkpoint moves the low watermark and discards what is below."""
    rep.h = seq
    rep.stable_digest = d
    snap = rep.own_cks[seq][1]
    rep.own_cks = {s: v for s, v in rep.own_cks.items() if s >= seq}
    rep.log = {s: e for s, e in rep.log.items() if s > seq}
    rep.pset = {s: v for s, v in rep.pset.items() if s > seq}
    rep.qset = {s: v for s, v in rep.qset.items() if s > seq}
    rep.bodies = {s: v for s, v in rep.bodies.items() if s > seq}
    for r, cl in rep.claims.items():
        rep.claims[r] = {s: v for s, v in cl.items() if s > seq}
    window.recount(rep)
    out.append(Stable(seq, d, snap))
    rep.try_propose(out)


# ---------------------------------------------------------------------- state transfer


def fetch(rep: Replica, seq: int, d: bytes, out: list[Action]) -> None:
    rep.fetching = (seq, d)
    rep.stats["state_fetches"] += 1
    out.append(Send(None, m.StateRequest(seq=seq, replica=rep.id)))


def on_state_request(rep: Replica, r: m.StateRequest, out: list[Action]) -> Rejection | None:
    if rep.h < r.seq or rep.h == 0:
        return Rejection.STALE
    # One reply per peer and checkpoint per view-change timeout (one lost is asked for again):
    # each is the whole snapshot, encoded afresh into the peer's send queue, and a request is
    # a dozen bytes that a fetching peer repeats every beacon (and a faulty one at will).
    if not retransmitting.once_per_timeout(rep, "state", r.replica, rep.h):
        return Rejection.DUPLICATE
    d, snap = rep.own_cks[rep.h]
    if len(snap) > m.MAX_SNAPSHOT:  # no peer would accept it: say so rather than send in vain
        rep.stats["state_too_big"] += 1
        log.error(
            "replica %d: checkpoint %d's snapshot is %d bytes, over the %d a STATE-REPLY may "
            "carry; replica %d cannot catch up by state transfer",
            rep.id,
            rep.h,
            len(snap),
            m.MAX_SNAPSHOT,
            r.replica,
        )
        return None
    out.append(Send(r.replica, m.StateReply(seq=rep.h, digest=d, snapshot=snap, replica=rep.id)))
    return None


def on_state_reply(rep: Replica, r: m.StateReply, out: list[Action]) -> Rejection | None:
    if r.seq <= rep.last_exec:
        return Rejection.DUPLICATE
    if m.sha256(r.snapshot) != r.digest:
        return Rejection.BAD_DIGEST
    if support(rep, r.seq, r.digest) < rep.cfg.f + 1 and rep.trusted != (r.seq, r.digest):
        return Rejection.UNCERTIFIED_STATE
    try:
        restore(rep, r.snapshot)
    except (ValueError, KeyError, TypeError, AttributeError):
        return Rejection.MALFORMED
    rep.stats["state_installs"] += 1
    rep.last_exec = r.seq
    rep.next_seq = max(rep.next_seq, r.seq)
    rep.own_cks[r.seq] = (r.digest, r.snapshot)
    rep.claims.setdefault(rep.id, {})[r.seq] = r.digest
    for key in [k for k in rep.pending if rep.executed(k)]:
        rep.pending.pop(key)
        rep.pending_since.pop(key, None)
        rep.queue.pop(key, None)
        rep.local.pop(key, None)
    if rep.fetching and rep.fetching[0] <= r.seq:
        rep.fetching = None
    make_stable(rep, r.seq, r.digest, out)
    out.append(Send(None, m.Checkpoint(seq=r.seq, digest=r.digest, replica=rep.id)))
    for e in list(rep.log.values()):
        rep.progress(e, out)
    rep.execute_ready(out)
    return None
