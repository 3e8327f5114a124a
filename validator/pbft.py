"""The PBFT replica as a pure state machine (Castro & Liskov, OSDI 1999; TOCS 2002).

No I/O and no clock: the shell feeds it authenticated messages
(``on_message``), local client requests (``submit``) and the time
(``on_tick``); each call returns the actions to perform (``actions``: messages
to send, records to log, batches committed, states to persist). That is what
lets one seeded simulator (``pot.validator.simulating``) drive thousands of
adversarial runs in seconds, and the asyncio replica (``pot.validator.replica``)
run the very same code.

This module holds the normal case (requests, PRE-PREPARE / PREPARE / COMMIT,
in-order execution); the rest of the replica lives beside it, as functions of
the ``Replica``: ``checkpointing`` (checkpoints, watermarks, garbage
collection, state transfer), ``viewchanging`` (VIEW-CHANGE / NEW-VIEW, with
the pure decision in ``viewchange``), ``retransmitting`` (STATUS beacons) and
``recovering`` (restart from the durable log).

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
- Clients named ``r<i>`` (``client_name``) are the replicas' own (the shell
  orders every API request under its replica's name), and their requests are
  authenticated as PBFT §4.1 has it: replica i signs each one
  (``Request.sig`` over ``messages.request_signing_bytes``). The primary checks
  the signature before it batches a request, and every backup checks the
  signatures of a PRE-PREPARE's bound-client requests before it prepares it
  (``FORGED_REQUEST``). Without that, a faulty primary could order requests
  under a correct replica's name: push its deduplication window past its real
  timestamps, or put junk under the key of a request it had been sent, and
  so drop that replica's verdicts as executed without ever being suspected.
  A peer's REQUEST under one is also accepted only from that replica
  (``SPOOFED_SENDER``). Requests re-proposed by a NEW-VIEW are not checked
  again: rule A2 (f+1 VIEW-CHANGEs pre-prepared it) means a correct replica
  checked them. Other client names are unauthenticated, and refused altogether
  (``UNKNOWN_CLIENT``, at entry and inside a PRE-PREPARE, whose primary is then treated as
  a forger) unless ``Config.open_clients`` (the bench, the simulator): each would be a row of
  the replicated deduplication table that a faulty primary could add without bound.
- VIEW-CHANGE size (``window``): this view's PRE-PREPAREs above h carry ``window.limit``
  bytes at most (``WINDOW_FULL``), so a NEW-VIEW of n VIEW-CHANGEs fits the 32 MiB frame.
- Log before send (TOCS §6): every accepted PRE-PREPARE and every PREPARE and
  COMMIT this replica sends is emitted as ``actions.Logged`` ahead of its
  ``Send``; a restarted replica reloads them (``recovering``) and so can never
  send a vote that contradicts one it sent before the crash.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from pot.validator import (
    admission,
    checkpointing,
    recovering,
    retransmitting,
    signatures,
    viewchanging,
    window,
)
from pot.validator import messages as m
from pot.validator.actions import Action, Committed, Durable, Executed, Logged, Send
from pot.validator.rejections import Rejection

log = logging.getLogger(__name__)

DEDUP_WINDOW = admission.DEDUP_WINDOW


def client_name(replica: int) -> str:
    """The client name under which replica ``replica`` orders its own (API) requests."""
    return f"r{replica}"


def signed(req: m.Request, crypto: Crypto) -> m.Request:
    """``req`` with its client's signature: how a replica sends its own requests (client_name)."""
    return req._replace(sig=crypto.sign(m.request_signing_bytes(req)))


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
    max_inflight: int = 8
    """Batches the primary keeps in flight; more requests wait and are batched."""
    retransmit_ms: int = 200
    """Period of STATUS beacons and client retransmissions."""
    open_clients: bool = False
    """Accept requests under client names no replica is bound to (``client_name``): only the
    bench and the simulator need it (peers.json pbft.openClients; ``admission``)."""
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
        if window.limit(self.n, self.window) < window.BATCH_OVERHEAD + window.MAX_REQUEST:
            raise ValueError(  # ``window``: a NEW-VIEW of n full VIEW-CHANGEs must fit a frame
                f"checkpoint_interval {self.checkpoint_interval} with n={self.n}: a view change "
                "could not carry one largest request within the transport's frame"
            )

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


class ExecContext(NamedTuple):
    """Where a request's batch sits in the total order (one per batch, shared by its
    requests): what a deterministic application may derive order-dependent values from."""

    seq: int
    view: int
    batch_digest: bytes


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


@dataclass(slots=True)
class Entry:
    """What a replica knows about one sequence number in one view."""

    view: int
    since: int = 0
    """When it was created (ms): retransmission leaves younger entries to the normal case."""
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
        self.no_propose_view = -1
        """A restarted primary does not propose in the view it crashed in (``actions.Logged``)."""
        self.h = 0
        self.last_exec = 0
        self.next_seq = 0
        self.log: dict[int, Entry] = {}
        self.pset: dict[int, tuple[int, bytes]] = {}
        self.qset: dict[int, dict[bytes, int]] = {}
        self.bodies: dict[int, dict[bytes, m.Batch]] = {}
        self.dedup: dict[str, tuple[int, set[int]]] = {}
        self.pending: dict[tuple[str, int], m.Request] = {}
        self.pending_since: dict[tuple[str, int], int] = {}
        self.pending_bytes = 0
        """At least the bytes of the pending requests' ops (``admission``)."""
        self.pending_recount = -(10**9)
        self.window_limit = window.limit(config.n, config.window)
        self.window_bytes = 0
        """What this view's PRE-PREPAREs above h add to a VIEW-CHANGE (``window``)."""
        self.queue: dict[tuple[str, int], m.Request] = {}
        self.local: dict[tuple[str, int], int] = {}
        self.own_cks: dict[int, tuple[bytes, bytes]] = {}
        self.claims: dict[int, dict[int, bytes]] = {}
        self.trusted: tuple[int, bytes] | None = None
        self.fetching: tuple[int, bytes] | None = None
        self.resent: dict[tuple[str, int], tuple[int, int]] = {}  # ``retransmitting``
        self.behind: tuple[int, bytes] | None = None
        self.vcs: dict[int, m.ViewChange] = {}
        self.last_nv: m.NewView | None = None
        self.last_status = -(10**9)
        """When this replica last multicast STATUS (ms)."""
        self.peer_exec: dict[int, int] = {}
        """Each peer's ``last_exec`` in its latest STATUS (``retransmitting``)."""
        self.lag: tuple[int, int] | None = None  # (since, last_exec): ``retransmitting.overdue``
        self.rejected: Counter[Rejection] = Counter()
        self.stats: Counter[str] = Counter()
        self.replica_clients = tuple(client_name(i) for i in range(config.n))
        """Client names bound to one replica each: only that replica may forward their REQUESTs."""
        self.bound_clients = frozenset(self.replica_clients)
        self.client_ids = {c: i for i, c in enumerate(self.replica_clients)}
        self.forged_view = -1
        """A view whose primary sent a PRE-PREPARE holding a forged request (``_on_pre_prepare``)."""
        self.verified: dict[bytes, None] = {}
        """Request signatures checked already (oldest first, ``signatures.VERIFIED_CACHE``)."""
        self.distrust_until: dict[int, int] = {}
        """Peers whose signature failed, and until when (ms) they are refused unchecked."""
        snap = checkpointing.snapshot(self)
        self.own_cks[0] = (m.sha256(snap), snap)
        self.stable_digest = self.own_cks[0][0]
        if durable is not None:
            recovering.recover(self, durable)
            window.recount(self)

    # ------------------------------------------------------------- properties

    @property
    def primary(self) -> int:
        return self.cfg.primary(self.view)

    @property
    def is_primary(self) -> bool:
        return self.primary == self.id

    @property
    def ready(self) -> bool:
        """Inside a view (not changing views) in which, as primary, it may propose."""
        return not self.view_changing and not (
            self.is_primary and self.view <= self.no_propose_view
        )

    # ------------------------------------------------------------- entry points

    def submit(self, req: m.Request) -> list[Action]:
        """A request from a local client (the HTTP API): forward to the primary, track it."""
        out: list[Action] = []
        if len(req.op) > m.MAX_OP_BYTES:  # peers would refuse it, and any batch holding it
            self.rejected[Rejection.OVERSIZED] += 1
            return out
        refused = admission.client_refusal(self, req, None)
        if refused is not None:  # every backup would refuse the batch holding it
            self.rejected[refused] += 1
            return out
        # Already pending (e.g. reloaded from the log after a restart) counts as this client's
        # too: the retransmission multicasts it, so the others' timers run for it.
        if (self.add_request(req, out) or req.key in self.pending) and req.key not in self.local:
            self.local[req.key] = self.now
            if not self.is_primary:
                out.append(Send(self.primary, req))
        self.try_propose(out)
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
            if self.vc_quorum_at is None and (
                viewchanging.count(self) >= self.cfg.quorum or self.id not in self.vcs
            ):  # (none of its own: restarted in a view it had entered, ``recovering``)
                self.vc_quorum_at = now
            if self.vc_quorum_at is not None and now - self.vc_quorum_at >= backoff:
                viewchanging.start(self, self.view + 1, out)
        elif retransmitting.overdue(self, now):  # a request waited, or this replica is stuck
            viewchanging.start(self, self.view + 1, out)
        if self.behind is not None:
            if self.behind[0] <= self.last_exec:
                self.behind = None
            elif self.fetching is None or self.fetching[0] < self.behind[0]:
                checkpointing.fetch(self, *self.behind, out)
        if now - self.last_status >= retransmitting.period(self):
            self.last_status = now
            retransmitting.beacon(self, out)
        self.try_propose(out)
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
        if isinstance(msg, (m.Prepare, m.Commit)):  # most messages by far: 2(n-1) per batch
            return self._on_vote(msg, out) if msg.replica == sender else Rejection.SPOOFED_SENDER
        if isinstance(msg, m.Request):
            refused = admission.client_refusal(self, msg, sender)
            if refused is not None:
                return refused
            return None if self.add_request(msg, out) else Rejection.DUPLICATE
        if isinstance(msg, (m.NewView, m.ViewChange)) and signatures.distrusted(self, sender):
            return Rejection.DISTRUSTED
        if isinstance(msg, m.NewView):
            return viewchanging.on_new_view(self, msg, sender, out)
        if msg.replica != sender:
            return Rejection.SPOOFED_SENDER
        if isinstance(msg, m.PrePrepare):
            return self._on_pre_prepare(msg, out)
        if isinstance(msg, m.Checkpoint):
            return checkpointing.on_checkpoint(self, msg, out)
        if isinstance(msg, m.Status):
            return retransmitting.on_status(self, msg, out)
        if isinstance(msg, m.ViewChange):
            return viewchanging.on_view_change(self, msg, out)
        if isinstance(msg, m.StateRequest):
            return checkpointing.on_state_request(self, msg, out)
        if isinstance(msg, m.StateReply):
            return checkpointing.on_state_reply(self, msg, out)
        return Rejection.UNKNOWN_TYPE

    # ------------------------------------------------------------- requests

    def executed(self, key: tuple[str, int]) -> bool:
        client, ts = key
        got = self.dedup.get(client)
        return got is not None and (ts <= got[0] or ts in got[1])

    def add_request(self, req: m.Request, out: list[Action]) -> bool:
        key = req.key
        if key in self.pending or self.executed(key):
            return False
        if not admission.admit(self, len(req.op)):
            self.rejected[Rejection.OVERSIZED] += 1
            return False
        self.pending[key] = req
        self.pending_since[key] = self.now
        self.queue[key] = req
        self.try_propose(out)
        return True

    def try_propose(self, out: list[Action]) -> None:
        if (
            self.view_changing
            or self.cfg.primary(self.view) != self.id
            or self.view <= self.no_propose_view
        ):
            return
        cfg = self.cfg
        queue = self.queue
        while queue and self.next_seq - self.last_exec < cfg.max_inflight:
            if self.next_seq >= self.h + cfg.window:
                return  # PBFT §4.3: wait for a stable checkpoint to move the window
            batch = window.pack(self)
            if not batch and not queue:
                return
            self.next_seq += 1
            pp = m.pre_prepare(
                view=self.view,
                seq=self.next_seq,
                nonce=self.crypto.nonce(),
                batch=tuple(batch),
                replica=self.id,
            )
            self.accept_pre_prepare(pp, out)
            out.append(Send(None, pp))

    # ------------------------------------------------------------- normal case

    def entry(self, view: int, seq: int) -> Entry:
        e = self.log.get(seq)
        if e is None or e.view < view:
            e = self.log[seq] = Entry(view=view, since=self.now)
        return e

    def accept_pre_prepare(self, pp: m.PrePrepare, out: list[Action]) -> None:
        e = self.entry(pp.view, pp.seq)
        window.count(self, e.pp, pp)
        e.pp = pp
        self.qset.setdefault(pp.seq, {})[pp.digest] = pp.view
        self.bodies.setdefault(pp.seq, {})[pp.digest] = m.Batch(nonce=pp.nonce, requests=pp.batch)
        self.next_seq = max(self.next_seq, pp.seq)
        self.track(pp.batch)
        out.append(Logged(pp, gate=pp.replica != self.id))
        if pp.replica != self.id:
            e.prepares.setdefault(pp.digest, set()).add(self.id)
            prepare = m.Prepare(view=pp.view, seq=pp.seq, digest=pp.digest, replica=self.id)
            out.append(Logged(prepare))
            out.append(Send(None, prepare))
        self.progress(e, out)

    def track(self, batch: tuple[m.Request, ...]) -> None:
        """Requests in an accepted batch are pending until executed (the view-change timer runs
        for them, and a new primary re-proposes them if the batch is lost)."""
        pending, since, queue, now = self.pending, self.pending_since, self.queue, self.now
        dedup = self.dedup
        for r in batch:
            client, ts = key = (r.client, r.ts)
            if key not in pending:
                got = dedup.get(client)  # ``executed``, inlined (once per request per replica)
                if got is None or (ts > got[0] and ts not in got[1]):
                    pending[key] = r
                    since[key] = now
            queue.pop(key, None)

    def _on_pre_prepare(self, pp: m.PrePrepare, out: list[Action]) -> Rejection | None:
        if pp.view != self.view or self.view_changing:
            return Rejection.WRONG_VIEW
        if pp.replica != self.primary:
            return Rejection.NOT_PRIMARY
        if pp.view == self.forged_view:
            return Rejection.FORGED_REQUEST  # its primary forged one already: see below
        if not self.h < pp.seq <= self.h + self.cfg.window:
            return Rejection.STALE if pp.seq <= self.h else Rejection.OUTSIDE_WINDOW
        if self.trusted is not None and pp.seq <= self.trusted[0]:  # TOCS §4.5.3: the NEW-VIEW's
            return Rejection.STALE  # checkpoint is the low watermark (below: state transfer only)
        if len(pp.batch) > self.cfg.batch_size:
            return Rejection.OVERSIZED
        e = self.log.get(pp.seq)
        if e is not None and e.view == pp.view and e.pp is not None:
            return Rejection.DUPLICATE if e.pp.digest == pp.digest else Rejection.EQUIVOCATION
        if pp.batch and self.window_bytes + window.cost(pp) > self.window_limit:
            return Rejection.WINDOW_FULL  # ``window``: empty ones pass even over the limit
        if pp.actual_digest() != pp.digest:
            return Rejection.BAD_DIGEST
        refused = admission.batch_refusal(self, pp)  # see client_name: its primary is faulty
        if refused is not None:
            return refused
        if pp.seq <= self.last_exec and e is None:
            return Rejection.STALE
        self.accept_pre_prepare(pp, out)
        return None

    def _on_vote(self, v: m.Prepare | m.Commit, out: list[Action]) -> Rejection | None:
        if v.view != self.view:
            return Rejection.WRONG_VIEW
        if not self.h < v.seq <= self.h + self.cfg.window:
            return Rejection.STALE if v.seq <= self.h else Rejection.OUTSIDE_WINDOW
        is_prepare = type(v) is m.Prepare
        if is_prepare and v.replica == self.cfg.primary(v.view):
            return Rejection.NOT_PRIMARY
        e = self.entry(v.view, v.seq)
        votes = e.prepares if is_prepare else e.commits
        voters = votes.get(v.digest)
        if voters is None:  # (rare: a new digest) one vote per replica, so a faulty one's
            for others in votes.values():  # junk cannot crowd out the others' (nor memory)
                if v.replica in others:
                    return Rejection.EQUIVOCATION
            voters = votes[v.digest] = set()
        elif v.replica in voters:
            return Rejection.DUPLICATE
        voters.add(v.replica)
        self.progress(e, out)
        return None

    def progress(self, e: Entry, out: list[Action]) -> None:
        """Advance one entry: prepared → send COMMIT; committed → execute in order."""
        pp = e.pp
        if pp is None or self.view_changing:
            return
        d = pp.digest
        if not e.prepared:
            backups = e.prepares.get(d, ())
            primary_voted = self.cfg.primary(e.view) in backups
            if len(backups) - primary_voted >= self.cfg.commit_q - 1:
                e.prepared = True
                self.pset[pp.seq] = (e.view, d)
                if not e.sent_commit:
                    e.sent_commit = True
                    e.commits.setdefault(d, set()).add(self.id)
                    commit = m.Commit(view=e.view, seq=pp.seq, digest=d, replica=self.id)
                    out.append(Logged(commit))
                    out.append(Send(None, commit))
        if not e.committed and len(e.commits.get(d, ())) >= self.cfg.commit_q:
            # Committed-local (§4.2) — or, without our own PREPARE, by observing 2f+1 COMMITs.
            e.committed = True
            self.execute_ready(out)

    def execute_ready(self, out: list[Action]) -> None:
        progressed = False
        pending, since, queue, local = self.pending, self.pending_since, self.queue, self.local
        dedup = self.dedup
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
            done: list[m.Request] = []
            results: list[bytes] = []
            execute, ctx = self.app.execute, ExecContext(seq, e.view, pp.digest)
            for r in pp.batch:
                client, ts = key = (r.client, r.ts)
                pending.pop(key, None)
                since.pop(key, None)
                queue.pop(key, None)
                local.pop(key, None)
                # ``executed`` and ``_mark_executed``, inlined: this loop runs once per request
                # on every replica, and the two calls were a tenth of a backup's time in it.
                got = dedup.get(client)
                if got is None:
                    dedup[client] = (-1, {ts})
                elif ts <= got[0] or ts in got[1]:
                    continue
                else:
                    got[1].add(ts)
                    if len(got[1]) > 2 * DEDUP_WINDOW:
                        admission.slide(self, client)
                done.append(r)
                results.append(execute(r, ctx))
            if done:
                out.append(Executed(seq, tuple(done), tuple(results)))
            self.stats["requests"] += len(done)
            if seq % self.cfg.checkpoint_interval == 0:
                checkpointing.take(self, seq, out)
        if progressed:
            self.view_start = max(self.view_start, self.now)  # progress resets the timer
            if self.fetching and self.fetching[0] <= self.last_exec:
                self.fetching = None
            self.try_propose(out)
