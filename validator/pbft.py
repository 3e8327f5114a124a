"""The PBFT replica as a pure state machine (Castro & Liskov, OSDI 1999; TOCS 2002).

No I/O and no clock: the shell feeds it authenticated messages
(``on_message``), local client requests (``submit``) and the time
(``on_tick``); each call returns the actions to perform (messages to send,
batches committed, states to persist). That is what lets one seeded simulator
(``pot.validator.simulating``) drive thousands of adversarial runs in seconds,
and the asyncio replica (``pot.validator.replica``) run the very same code.

Choices, with the paper section that motivates each:

- Normal case PRE-PREPARE / PREPARE / COMMIT (§4.2), *batched* (TOCS §5.1.4):
  the primary keeps at most ``max_inflight`` batches in flight and packs every
  request that queued meanwhile, so batches grow with load by themselves.
- Authentication is per-pair MACs on the hot path (TOCS §3.2); the transport
  checks them and tells us the sender. VIEW-CHANGE and NEW-VIEW are signed
  (see ``viewchange``). Each rejected input is counted under its
  ``Rejection``.
- Checkpoints every K (§4.3) with the low/high watermarks (h, h + L], L = 2K;
  a checkpoint becomes stable with 2f+1 matching CHECKPOINTs, and the log,
  P/Q sets and old snapshots below it are discarded.
- Retransmission by STATUS beacons (TOCS §5.2): a replica that sees a peer
  behind re-sends its own messages for the missing sequence numbers.
- State transfer (TOCS §5.3, simplified to whole snapshots): a replica that
  learns of a stable checkpoint above what it executed fetches the snapshot and
  checks it against the certified digest.
- A replica that holds a PRE-PREPARE and 2f+1 matching COMMITs executes the
  batch even if it did not prepare it itself: 2f+1 commits prove the batch is
  committed at f+1 correct replicas, so this is safe, and it is how lagging or
  restarted replicas catch up between checkpoints.
- Deduplication (§4.1): ``(client, ts)`` is executed at most once; the set of
  executed timestamps per client is part of the replicated (checkpointed)
  state, in a sliding window so it stays bounded.
- A restarted replica lost its P/Q sets and the votes it sent. It stays
  *muted* (sends no PRE-PREPARE/PREPARE/COMMIT) in any view up to the one it
  crashed in, so it can never contradict itself; it still executes by
  observation and state transfer, and votes again from the next view.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeAlias

from pot.validator import messages as m
from pot.validator import viewchange
from pot.validator.rejections import Rejection

log = logging.getLogger(__name__)

DEDUP_WINDOW = 4096
MAX_PENDING = 200_000
MAX_RETRANSMIT = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """Protocol parameters shared by all replicas of a set."""

    n: int
    """Replicas; at least 3f+1."""
    f: int
    """Faulty replicas tolerated."""
    checkpoint_interval: int = 64
    """K: a checkpoint every K sequence numbers (ValidatorSet pbft.checkpointInterval)."""
    batch_size: int = 100
    """Most requests per PRE-PREPARE (pbft.batchSize)."""
    view_change_timeout_ms: int = 4000
    """How long a request may wait before backups suspect the primary (pbft.viewChangeTimeoutMs)."""
    max_inflight: int = 4
    """Batches the primary keeps in flight; more requests wait and are batched."""
    retransmit_ms: int = 200
    """Period of STATUS beacons and client retransmissions."""
    normal_quorum: int | None = None
    """Override of the 2f+1 quorum of the normal case (prepared certificate and commit).
    Only the simulator's deliberately broken variant sets it (to 2f)."""

    def __post_init__(self) -> None:
        if self.f < 0 or self.n < 3 * self.f + 1:
            raise ValueError(
                f"n={self.n} replicas cannot tolerate f={self.f} faults (need n >= 3f+1)"
            )
        for name in ("checkpoint_interval", "batch_size", "max_inflight", "retransmit_ms"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.view_change_timeout_ms < 1:
            raise ValueError("view_change_timeout_ms must be >= 1")

    @property
    def window(self) -> int:
        """L, the log size between the watermarks (PBFT §4.3 suggests 2K)."""
        return 2 * self.checkpoint_interval

    @property
    def quorum(self) -> int:
        return 2 * self.f + 1

    @property
    def commit_q(self) -> int:
        return self.normal_quorum if self.normal_quorum is not None else self.quorum

    def primary(self, view: int) -> int:
        return view % self.n


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecContext:
    """Where a request sits in the total order; the batch digest seeds audit sampling."""

    seq: int
    view: int
    batch_digest: bytes
    index: int


class Application(Protocol):
    """The replicated, deterministic service."""

    def execute(self, request: m.Request, ctx: ExecContext) -> bytes: ...

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


class Crypto(Protocol):
    """Signatures for VIEW-CHANGE/NEW-VIEW and the primary's batch nonces."""

    def sign(self, data: bytes) -> bytes: ...

    def verify(self, replica: int, data: bytes, signature: bytes) -> bool: ...

    def nonce(self) -> bytes: ...


# ---------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Send:
    to: int | None
    """A replica id, or None for every other replica."""
    msg: m.Message


@dataclass(frozen=True, slots=True)
class Executed:
    seq: int
    request: m.Request
    result: bytes


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


Action: TypeAlias = Send | Executed | Committed | Stable | ViewEntered


@dataclass(frozen=True, slots=True, kw_only=True)
class Durable:
    """What a replica recovers from disk: the stable checkpoint and the batches after it."""

    view: int
    seq: int
    digest: bytes
    snapshot: bytes
    log: tuple[tuple[int, int, m.Batch], ...] = ()
    """(seq, view, batch) committed after ``seq``, in order."""


@dataclass(slots=True)
class _Entry:
    view: int
    pp: m.PrePrepare | None = None
    prepares: dict[bytes, set[int]] = field(default_factory=dict)
    commits: dict[bytes, set[int]] = field(default_factory=dict)
    prepared: bool = False
    committed: bool = False
    sent_commit: bool = False


class Replica:
    """One PBFT replica. Not thread-safe; the shell serialises calls."""

    def __init__(
        self,
        *,
        config: Config,
        replica_id: int,
        app: Application,
        crypto: Crypto,
        durable: Durable | None = None,
    ) -> None:
        if not 0 <= replica_id < config.n:
            raise ValueError(f"replica id {replica_id} not in 0..{config.n - 1}")
        self.cfg = config
        self.id = replica_id
        self.app = app
        self.crypto = crypto
        self.now = 0
        self.view = 0
        self.view_changing = False
        self.view_start = 0
        self.vc_quorum_at: int | None = None
        self.last_normal_view = 0
        self.mute_view = -1
        self.h = 0
        self.last_exec = 0
        self.next_seq = 0
        self.log: dict[int, _Entry] = {}
        self.pset: dict[int, tuple[int, bytes]] = {}
        self.qset: dict[int, dict[bytes, int]] = {}
        self.bodies: dict[int, dict[bytes, m.Batch]] = {}
        self.dedup: dict[str, tuple[int, set[int]]] = {}
        self.pending: dict[tuple[str, int], m.Request] = {}
        self.pending_since: dict[tuple[str, int], int] = {}
        self.queue: dict[tuple[str, int], m.Request] = {}
        self.local: dict[tuple[str, int], int] = {}
        self.own_cks: dict[int, tuple[bytes, bytes]] = {}
        self.claims: dict[int, dict[int, bytes]] = {}
        self.trusted: tuple[int, bytes] | None = None
        self.fetching: tuple[int, bytes] | None = None
        self.behind: tuple[int, bytes] | None = None
        self.vcs: dict[int, m.ViewChange] = {}
        self.last_nv: m.NewView | None = None
        self.next_status = 0
        self.rejected: Counter[Rejection] = Counter()
        self.stats: Counter[str] = Counter()
        snap = self._snapshot()
        self.own_cks[0] = (m.sha256(snap), snap)
        self.stable_digest = self.own_cks[0][0]
        if durable is not None:
            self._recover(durable)

    # ------------------------------------------------------------- properties

    @property
    def primary(self) -> int:
        return self.cfg.primary(self.view)

    @property
    def is_primary(self) -> bool:
        return self.primary == self.id

    @property
    def ready(self) -> bool:
        """Inside a view (not changing views) and allowed to vote in it."""
        return not self.view_changing and self.view > self.mute_view

    # ------------------------------------------------------------- entry points

    def submit(self, req: m.Request) -> list[Action]:
        """A request from a local client (the HTTP API): forward to the primary, track it."""
        out: list[Action] = []
        if self._add_request(req, out) and req.key not in self.local:
            self.local[req.key] = self.now
            if not self.is_primary:
                out.append(Send(self.primary, req))
        self._try_propose(out)
        return out

    def on_tick(self, now: int) -> list[Action]:
        """Time passes: view-change timers, retransmission, batching."""
        self.now = now
        out: list[Action] = []
        t = self.cfg.view_change_timeout_ms
        if self.view_changing:
            # TOCS §4.5.2: the timer for view v+1 only runs once 2f+1 replicas asked for v, so a
            # replica cut off alone does not race through views nobody else will join.
            backoff = t * (2 ** min(self.view - self.last_normal_view - 1, 6))
            if self.vc_quorum_at is None and self._vc_count() >= self.cfg.quorum:
                self.vc_quorum_at = now
            if self.vc_quorum_at is not None and now - self.vc_quorum_at >= backoff:
                self._start_view_change(self.view + 1, out)
        elif self.pending:
            oldest = self.pending_since[next(iter(self.pending_since))]
            if now - max(oldest, self.view_start) >= t:
                self._start_view_change(self.view + 1, out)
        if self.behind is not None:
            if self.behind[0] <= self.last_exec:
                self.behind = None
            elif self.fetching is None or self.fetching[0] < self.behind[0]:
                self._fetch(*self.behind, out)
        if now >= self.next_status:
            self.next_status = now + self.cfg.retransmit_ms
            self._beacon(out)
        self._try_propose(out)
        return out

    def on_message(self, msg: m.Message, sender: int) -> list[Action]:
        """An authenticated message from replica ``sender``. Never raises on bad input."""
        out: list[Action] = []
        reason = self._dispatch(msg, sender, out)
        if reason is not None:
            self.rejected[reason] += 1
            if reason is not Rejection.DUPLICATE:
                log.debug(
                    "replica %d rejected %s from %d: %s",
                    self.id,
                    type(msg).__name__,
                    sender,
                    reason.name,
                )
        return out

    def reject(self, reason: Rejection) -> None:
        """Count a rejection made before the core (transport, decoding)."""
        self.rejected[reason] += 1

    def _dispatch(self, msg: m.Message, sender: int, out: list[Action]) -> Rejection | None:
        if not 0 <= sender < self.cfg.n:
            return Rejection.UNKNOWN_PEER
        if isinstance(msg, m.Request):
            return None if self._add_request(msg, out) else Rejection.DUPLICATE
        if isinstance(msg, m.NewView):
            return self._on_new_view(msg, out)
        if msg.replica != sender:
            return Rejection.SPOOFED_SENDER
        if isinstance(msg, m.Prepare | m.Commit):
            return self._on_vote(msg, out)
        if isinstance(msg, m.PrePrepare):
            return self._on_pre_prepare(msg, out)
        if isinstance(msg, m.Checkpoint):
            return self._on_checkpoint(msg, out)
        if isinstance(msg, m.Status):
            return self._on_status(msg, out)
        if isinstance(msg, m.ViewChange):
            return self._on_view_change(msg, out)
        if isinstance(msg, m.StateRequest):
            return self._on_state_request(msg, out)
        if isinstance(msg, m.StateReply):
            return self._on_state_reply(msg, out)
        return Rejection.UNKNOWN_TYPE

    # ------------------------------------------------------------- requests

    def _executed(self, key: tuple[str, int]) -> bool:
        client, ts = key
        got = self.dedup.get(client)
        return got is not None and (ts <= got[0] or ts in got[1])

    def _add_request(self, req: m.Request, out: list[Action]) -> bool:
        key = req.key
        if key in self.pending or self._executed(key):
            return False
        if len(self.pending) >= MAX_PENDING:
            self.rejected[Rejection.OVERSIZED] += 1
            return False
        self.pending[key] = req
        self.pending_since[key] = self.now
        self.queue[key] = req
        self._try_propose(out)
        return True

    def _try_propose(self, out: list[Action]) -> None:
        if not (self.is_primary and self.ready):
            return
        cfg = self.cfg
        while self.queue and self.next_seq - self.last_exec < cfg.max_inflight:
            if self.next_seq >= self.h + cfg.window:
                return  # PBFT §4.3: wait for a stable checkpoint to move the window
            batch: list[m.Request] = []
            while self.queue and len(batch) < cfg.batch_size:
                key, req = next(iter(self.queue.items()))
                del self.queue[key]
                if not self._executed(key):
                    batch.append(req)
            if not batch:
                return
            self.next_seq += 1
            nonce = self.crypto.nonce()
            reqs = tuple(batch)
            pp = m.PrePrepare(
                view=self.view,
                seq=self.next_seq,
                digest=m.batch_digest(nonce, reqs),
                nonce=nonce,
                batch=reqs,
                replica=self.id,
            )
            self._accept_pre_prepare(pp, out)
            out.append(Send(None, pp))

    # ------------------------------------------------------------- normal case

    def _entry(self, view: int, seq: int) -> _Entry:
        e = self.log.get(seq)
        if e is None or e.view < view:
            e = self.log[seq] = _Entry(view=view)
        return e

    def _accept_pre_prepare(self, pp: m.PrePrepare, out: list[Action]) -> None:
        e = self._entry(pp.view, pp.seq)
        e.pp = pp
        self.qset.setdefault(pp.seq, {})[pp.digest] = pp.view
        self.bodies.setdefault(pp.seq, {})[pp.digest] = m.Batch(nonce=pp.nonce, requests=pp.batch)
        self.next_seq = max(self.next_seq, pp.seq)
        for r in pp.batch:
            if r.key not in self.pending and not self._executed(r.key):
                self.pending[r.key] = r
                self.pending_since[r.key] = self.now
            self.queue.pop(r.key, None)
        if pp.replica != self.id and pp.view > self.mute_view:
            e.prepares.setdefault(pp.digest, set()).add(self.id)
            out.append(
                Send(None, m.Prepare(view=pp.view, seq=pp.seq, digest=pp.digest, replica=self.id))
            )
        self._progress(e, out)

    def _on_pre_prepare(self, pp: m.PrePrepare, out: list[Action]) -> Rejection | None:
        if pp.view != self.view or self.view_changing:
            return Rejection.WRONG_VIEW
        if pp.replica != self.primary:
            return Rejection.NOT_PRIMARY
        if not self.h < pp.seq <= self.h + self.cfg.window:
            return Rejection.STALE if pp.seq <= self.h else Rejection.OUTSIDE_WINDOW
        if len(pp.batch) > self.cfg.batch_size:
            return Rejection.OVERSIZED
        if m.batch_digest(pp.nonce, pp.batch) != pp.digest:
            return Rejection.BAD_DIGEST
        e = self.log.get(pp.seq)
        if e is not None and e.view == pp.view and e.pp is not None:
            return Rejection.DUPLICATE if e.pp.digest == pp.digest else Rejection.EQUIVOCATION
        if pp.seq <= self.last_exec and e is None:
            return Rejection.STALE
        self._accept_pre_prepare(pp, out)
        return None

    def _on_vote(self, v: m.Prepare | m.Commit, out: list[Action]) -> Rejection | None:
        if v.view != self.view:
            return Rejection.WRONG_VIEW
        if not self.h < v.seq <= self.h + self.cfg.window:
            return Rejection.STALE if v.seq <= self.h else Rejection.OUTSIDE_WINDOW
        if isinstance(v, m.Prepare) and v.replica == self.cfg.primary(v.view):
            return Rejection.NOT_PRIMARY
        e = self._entry(v.view, v.seq)
        votes = e.prepares if isinstance(v, m.Prepare) else e.commits
        if v.digest not in votes and len(votes) >= self.cfg.n:
            return Rejection.EQUIVOCATION  # bound memory against digest floods
        voters = votes.setdefault(v.digest, set())
        if v.replica in voters:
            return Rejection.DUPLICATE
        voters.add(v.replica)
        self._progress(e, out)
        return None

    def _progress(self, e: _Entry, out: list[Action]) -> None:
        """Advance one entry: prepared → send COMMIT; committed → execute in order."""
        pp = e.pp
        if pp is None or self.view_changing:
            return
        d = pp.digest
        backups = e.prepares.get(d, set())
        if (
            not e.prepared
            and len(backups) - (self.cfg.primary(e.view) in backups) >= self.cfg.commit_q - 1
        ):
            e.prepared = True
            self.pset[pp.seq] = (e.view, d)
            if e.view > self.mute_view and not e.sent_commit:
                e.sent_commit = True
                e.commits.setdefault(d, set()).add(self.id)
                out.append(Send(None, m.Commit(view=e.view, seq=pp.seq, digest=d, replica=self.id)))
        if not e.committed and len(e.commits.get(d, ())) >= self.cfg.commit_q:
            # Committed-local (§4.2) — or, without our own PREPARE, by observing 2f+1 COMMITs.
            e.committed = True
            self._execute_ready(out)

    def _execute_ready(self, out: list[Action]) -> None:
        progressed = False
        while True:
            e = self.log.get(self.last_exec + 1)
            if e is None or not e.committed or e.pp is None:
                break
            pp = e.pp
            seq = self.last_exec = pp.seq
            progressed = True
            self.stats["batches"] += 1
            out.append(
                Committed(seq, e.view, pp.digest, m.Batch(nonce=pp.nonce, requests=pp.batch))
            )
            for i, r in enumerate(pp.batch):
                key = r.key
                self.pending.pop(key, None)
                self.pending_since.pop(key, None)
                self.queue.pop(key, None)
                self.local.pop(key, None)
                if self._executed(key):
                    continue
                self._mark_executed(key)
                ctx = ExecContext(seq=seq, view=e.view, batch_digest=pp.digest, index=i)
                out.append(Executed(seq, r, self.app.execute(r, ctx)))
                self.stats["requests"] += 1
            if seq % self.cfg.checkpoint_interval == 0:
                self._take_checkpoint(seq, out)
        if progressed:
            self.view_start = max(self.view_start, self.now)  # progress resets the timer
            if self.fetching and self.fetching[0] <= self.last_exec:
                self.fetching = None
            self._try_propose(out)

    def _mark_executed(self, key: tuple[str, int]) -> None:
        # Keep the newest DEDUP_WINDOW..2*DEDUP_WINDOW timestamps per client; anything at or
        # below ``floor`` counts as executed, so a client must not hold a request back for
        # more than DEDUP_WINDOW of its own newer ones (the API's clients never do).
        client, ts = key
        floor, seen = self.dedup.get(client, (-1, set()))
        seen.add(ts)
        if len(seen) > 2 * DEDUP_WINDOW:
            ordered = sorted(seen)
            floor = ordered[DEDUP_WINDOW - 1]
            seen = set(ordered[DEDUP_WINDOW:])
        self.dedup[client] = (floor, seen)

    # ------------------------------------------------------------- checkpoints

    def _snapshot(self) -> bytes:
        dedup = {c: [floor, sorted(s)] for c, (floor, s) in sorted(self.dedup.items())}
        doc = {"dedup": dedup, "app": self.app.snapshot().hex()}
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    def _restore(self, snapshot: bytes) -> None:
        doc = json.loads(snapshot)
        self.app.restore(bytes.fromhex(doc["app"]))
        self.dedup = {c: (int(fl), {int(t) for t in ts}) for c, (fl, ts) in doc["dedup"].items()}

    def _take_checkpoint(self, seq: int, out: list[Action]) -> None:
        snap = self._snapshot()
        d = m.sha256(snap)
        self.own_cks[seq] = (d, snap)
        self.claims.setdefault(self.id, {})[seq] = d
        out.append(Send(None, m.Checkpoint(seq=seq, digest=d, replica=self.id)))
        self._check_stable(seq, d, out)

    def _on_checkpoint(self, c: m.Checkpoint, out: list[Action]) -> Rejection | None:
        if c.seq <= self.h:
            return Rejection.STALE
        mine = self.claims.setdefault(c.replica, {})
        if mine.get(c.seq) == c.digest:
            return Rejection.DUPLICATE
        mine[c.seq] = c.digest
        while len(mine) > 4:  # bounded: a Byzantine replica cannot grow our memory
            del mine[min(mine)]
        self._check_stable(c.seq, c.digest, out)
        return None

    def _support(self, seq: int, d: bytes) -> int:
        return sum(1 for cl in self.claims.values() if cl.get(seq) == d)

    def _check_stable(self, seq: int, d: bytes, out: list[Action]) -> None:
        if seq <= self.h or self._support(seq, d) < self.cfg.quorum:
            return
        own = self.own_cks.get(seq)
        if own is not None and own[0] == d:
            self._make_stable(seq, d, out)
        elif self.last_exec < seq and (self.behind is None or self.behind[0] < seq):
            self.behind = (seq, d)  # fetched on the next tick unless execution catches up
        elif own is not None:
            log.error("replica %d: own checkpoint %d differs from the quorum's", self.id, seq)

    def _make_stable(self, seq: int, d: bytes, out: list[Action]) -> None:
        """PBFT §4.3: a stable checkpoint moves the low watermark and discards what is below."""
        self.h = seq
        self.stable_digest = d
        snap = self.own_cks[seq][1]
        self.own_cks = {s: v for s, v in self.own_cks.items() if s >= seq}
        self.log = {s: e for s, e in self.log.items() if s > seq}
        self.pset = {s: v for s, v in self.pset.items() if s > seq}
        self.qset = {s: v for s, v in self.qset.items() if s > seq}
        self.bodies = {s: v for s, v in self.bodies.items() if s > seq}
        for r, cl in self.claims.items():
            self.claims[r] = {s: v for s, v in cl.items() if s > seq}
        out.append(Stable(seq, d, snap))
        self._try_propose(out)

    # ------------------------------------------------------------- state transfer

    def _fetch(self, seq: int, d: bytes, out: list[Action]) -> None:
        self.fetching = (seq, d)
        self.stats["state_fetches"] += 1
        out.append(Send(None, m.StateRequest(seq=seq, replica=self.id)))

    def _on_state_request(self, r: m.StateRequest, out: list[Action]) -> Rejection | None:
        if self.h < r.seq or self.h == 0:
            return Rejection.STALE
        d, snap = self.own_cks[self.h]
        out.append(
            Send(r.replica, m.StateReply(seq=self.h, digest=d, snapshot=snap, replica=self.id))
        )
        return None

    def _on_state_reply(self, r: m.StateReply, out: list[Action]) -> Rejection | None:
        if r.seq <= self.last_exec:
            return Rejection.DUPLICATE
        if m.sha256(r.snapshot) != r.digest:
            return Rejection.BAD_DIGEST
        if self._support(r.seq, r.digest) < self.cfg.f + 1 and self.trusted != (r.seq, r.digest):
            return Rejection.UNCERTIFIED_STATE
        try:
            self._restore(r.snapshot)
        except (ValueError, KeyError, TypeError, AttributeError):
            return Rejection.MALFORMED
        self.stats["state_installs"] += 1
        self.last_exec = r.seq
        self.next_seq = max(self.next_seq, r.seq)
        self.own_cks[r.seq] = (r.digest, r.snapshot)
        self.claims.setdefault(self.id, {})[r.seq] = r.digest
        for key in [k for k in self.pending if self._executed(k)]:
            self.pending.pop(key)
            self.pending_since.pop(key, None)
            self.queue.pop(key, None)
            self.local.pop(key, None)
        if self.fetching and self.fetching[0] <= r.seq:
            self.fetching = None
        self._make_stable(r.seq, r.digest, out)
        out.append(Send(None, m.Checkpoint(seq=r.seq, digest=r.digest, replica=self.id)))
        for e in list(self.log.values()):
            self._progress(e, out)
        self._execute_ready(out)
        return None

    # ------------------------------------------------------------- retransmission

    def _beacon(self, out: list[Action]) -> None:
        out.append(
            Send(
                None,
                m.Status(
                    view=self.view,
                    normal=not self.view_changing,
                    h=self.h,
                    last_exec=self.last_exec,
                    replica=self.id,
                ),
            )
        )
        if self.view_changing and self.id in self.vcs:
            out.append(Send(None, self.vcs[self.id]))
        if self.fetching:
            out.append(Send(None, m.StateRequest(seq=self.fetching[0], replica=self.id)))
        for i, (key, t) in enumerate(list(self.local.items())):
            if i >= MAX_RETRANSMIT:
                break
            if self.now - t >= self.cfg.retransmit_ms and key in self.pending:
                self.local[key] = self.now
                out.append(Send(None, self.pending[key]))  # PBFT §4.1: the client multicasts

    def _on_status(self, s: m.Status, out: list[Action]) -> Rejection | None:
        to = s.replica
        if s.h < self.h:  # checkpoints are view-independent: a replica stuck in a view change
            # (or restarted) still catches up by state transfer (TOCS §5.3)
            out.append(
                Send(to, m.Checkpoint(seq=self.h, digest=self.stable_digest, replica=self.id))
            )
        if self.view_changing:
            return None
        if (
            s.view < self.view or (s.view == self.view and not s.normal)
        ) and self.last_nv is not None:
            out.append(Send(to, self.last_nv))
            return None
        if s.view != self.view:
            return None
        sent = 0
        for seq in range(max(s.last_exec, self.h) + 1, self.h + self.cfg.window + 1):
            e = self.log.get(seq)
            if e is None or e.view != self.view or e.pp is None or sent >= MAX_RETRANSMIT:
                if e is None and seq > self.next_seq:
                    break
                continue
            sent += 1
            d = e.pp.digest
            if self.is_primary:
                out.append(Send(to, e.pp))
            elif self.id in e.prepares.get(d, ()):
                out.append(Send(to, m.Prepare(view=e.view, seq=seq, digest=d, replica=self.id)))
            if e.sent_commit:
                out.append(Send(to, m.Commit(view=e.view, seq=seq, digest=d, replica=self.id)))
        return None

    # ------------------------------------------------------------- view change

    def _start_view_change(self, view: int, out: list[Action]) -> None:
        if view <= self.view:
            return
        self.stats["view_changes"] += 1
        self.view = view
        self.view_changing = True
        self.vc_quorum_at = None
        lo, hi = self.h, self.h + self.cfg.window
        prepared = tuple(
            m.PEntry(seq=s, digest=d, view=v)
            for s, (v, d) in sorted(self.pset.items())
            if lo < s <= hi
        )
        pre = tuple(
            m.PEntry(seq=s, digest=d, view=v)
            for s, dm in sorted(self.qset.items())
            if lo < s <= hi
            for d, v in sorted(dm.items())
        )
        batches = {
            d: b
            for s, bm in self.bodies.items()
            if lo < s <= hi
            for d, b in bm.items()
            if d in self.qset.get(s, {}) and d != m.NULL_DIGEST
        }
        vc = m.ViewChange(
            view=view,
            h=self.h,
            checkpoints=tuple((s, d) for s, (d, _) in sorted(self.own_cks.items()) if s >= self.h),
            prepared=prepared,
            preprepared=pre,
            batches=tuple(batches[d] for d in sorted(batches)),
            replica=self.id,
        )
        vc = replace(vc, signature=self.crypto.sign(m.signing_bytes(vc)))
        self.vcs[self.id] = vc
        out.append(ViewEntered(view))
        out.append(Send(None, vc))
        self._try_new_view(out)

    def _on_view_change(self, vc: m.ViewChange, out: list[Action]) -> Rejection | None:
        if vc.view < self.view or (vc.view == self.view and not self.view_changing):
            if self.last_nv is not None and self.last_nv.view >= vc.view:
                out.append(Send(vc.replica, self.last_nv))  # it missed the NEW-VIEW
            return Rejection.STALE
        old = self.vcs.get(vc.replica)
        if old is not None and old.view >= vc.view:
            return Rejection.DUPLICATE
        bad = viewchange.validate(vc, n=self.cfg.n, window=self.cfg.window)
        if bad is not None:
            return bad
        if not self.crypto.verify(vc.replica, m.signing_bytes(vc), vc.signature):
            return Rejection.BAD_SIGNATURE
        self.vcs[vc.replica] = vc
        # Liveness (§4.5.2): f+1 replicas ask for a higher view → join the smallest of them.
        higher = sorted(v.view for r, v in self.vcs.items() if r != self.id and v.view > self.view)
        if len(higher) >= self.cfg.f + 1:
            self._start_view_change(higher[0], out)
        elif self.view_changing and vc.view == self.view:
            self._try_new_view(out)
        return None

    def _vc_count(self) -> int:
        # A VIEW-CHANGE for a later view also gave up on this one.
        return sum(1 for vc in self.vcs.values() if vc.view >= self.view)

    def _try_new_view(self, out: list[Action]) -> None:
        if not self.view_changing or self.cfg.primary(self.view) != self.id:
            return
        s = [vc for vc in self.vcs.values() if vc.view == self.view]
        decision = viewchange.decide(s, f=self.cfg.f, window=self.cfg.window)
        if decision is None:
            return
        nv = m.NewView(
            view=self.view,
            view_changes=tuple(sorted(s, key=lambda v: v.replica)),
            checkpoint=decision.checkpoint,
            chosen=decision.chosen,
            replica=self.id,
        )
        nv = replace(nv, signature=self.crypto.sign(m.signing_bytes(nv)))
        out.append(Send(None, nv))
        self._install(nv, out)

    def _on_new_view(self, nv: m.NewView, out: list[Action]) -> Rejection | None:
        if nv.replica != self.cfg.primary(nv.view):
            return Rejection.NOT_PRIMARY
        if nv.view < self.view or (nv.view == self.view and not self.view_changing):
            return Rejection.STALE
        if not self.crypto.verify(nv.replica, m.signing_bytes(nv), nv.signature):
            return Rejection.BAD_SIGNATURE
        senders = [vc.replica for vc in nv.view_changes]
        if len(set(senders)) != len(senders) or len(senders) < self.cfg.quorum:
            return Rejection.INVALID_NEW_VIEW
        for vc in nv.view_changes:
            if vc.view != nv.view or viewchange.validate(vc, n=self.cfg.n, window=self.cfg.window):
                return Rejection.INVALID_NEW_VIEW
            if not self.crypto.verify(vc.replica, m.signing_bytes(vc), vc.signature):
                return Rejection.BAD_SIGNATURE
        decision = viewchange.decide(nv.view_changes, f=self.cfg.f, window=self.cfg.window)
        if decision is None or decision.checkpoint != nv.checkpoint or decision.chosen != nv.chosen:
            return Rejection.INVALID_NEW_VIEW
        if nv.view > self.view:
            out.append(ViewEntered(nv.view))
        self._install(nv, out)
        return None

    def _install(self, nv: m.NewView, out: list[Action]) -> None:
        """Enter view ``nv.view`` from its decision (TOCS §4.5.3)."""
        self.stats["new_views"] += 1
        self.view = nv.view
        self.view_changing = False
        self.last_normal_view = nv.view
        self.view_start = self.now
        self.last_nv = nv
        ck_seq, ck_d = nv.checkpoint
        self.trusted = (ck_seq, ck_d)
        if ck_seq > self.h:
            own = self.own_cks.get(ck_seq)
            if own is not None and own[0] == ck_d:
                self._make_stable(ck_seq, ck_d, out)
            elif self.last_exec < ck_seq:
                self._fetch(ck_seq, ck_d, out)
        for s in [s for s, e in self.log.items() if e.view < nv.view]:
            del self.log[s]
        bodies = viewchange.bodies(nv.view_changes)
        primary = self.cfg.primary(nv.view)
        top = max(ck_seq, self.last_exec)
        in_flight: set[tuple[str, int]] = set()
        for seq, d in nv.chosen:
            top = max(top, seq)
            if seq <= self.h:
                continue
            b = bodies[d]
            pp = m.PrePrepare(
                view=nv.view, seq=seq, digest=d, nonce=b.nonce, batch=b.requests, replica=primary
            )
            in_flight.update(r.key for r in b.requests)
            self._accept_pre_prepare(pp, out)
        self.next_seq = top
        self.queue = {k: r for k, r in self.pending.items() if k not in in_flight}
        self._execute_ready(out)
        self._try_propose(out)

    # ------------------------------------------------------------- recovery

    def _recover(self, d: Durable) -> None:
        if d.seq > 0:
            self._restore(d.snapshot)
            self.own_cks = {d.seq: (d.digest, d.snapshot)}
            self.h = self.last_exec = self.next_seq = d.seq
            self.stable_digest = d.digest
        self.view = self.last_normal_view = d.view
        self.mute_view = d.view
        out: list[Action] = []
        for seq, view, batch in d.log:
            if seq != self.last_exec + 1:
                break
            e = self._entry(view, seq)
            e.pp = m.PrePrepare(
                view=view,
                seq=seq,
                digest=batch.digest(),
                nonce=batch.nonce,
                batch=batch.requests,
                replica=self.cfg.primary(view),
            )
            e.committed = True
            self._execute_ready(out)
        self.next_seq = self.last_exec
        self.stats["recovered_batches"] = self.last_exec - d.seq
