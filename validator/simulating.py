"""A seeded adversarial simulator for the pure PBFT core, and the safety checker.

Why: PBFT's safety argument (Castro & Liskov, TOCS 2002 §4.6 and the
appendix proof) holds for *any* network behaviour and any f Byzantine
replicas; unit tests only try the schedules someone thought of. The simulator
runs the real ``pbft.Replica`` (the same code the daemon runs) on a virtual
clock under random drops, duplicates, reordering delays, partitions that heal,
crashed replicas, replicas restarted from their simulated disk, and Byzantine
replicas that equivocate (different PRE-PREPAREs to different backups,
some with requests forged under a correct replica's client name, votes for
digests they never saw, lying VIEW-CHANGEs, wrong checkpoints, withheld
NEW-VIEWs). Everything derives from one seed, so a failing run
replays exactly.

The checker: every batch a non-Byzantine replica commits at sequence number s
must equal every other non-Byzantine replica's batch at s (safety), and
replicas that executed the same prefix must hold the same application state.
Liveness is reported separately: after the network heals, every request must
execute at every live correct replica. ``Scenario.normal_quorum`` plugs in a
deliberately broken variant (quorums of 2f replicas instead of 2f+1: an
off-by-one in the prepared certificate and the commit quorum) that the checker must catch, which
proves it can fail. A fifth of the requests are a correct replica's own (its
``client_name``, signed), and no correct replica may execute a request under
such a name that its replica never signed; ``Scenario.forgeable`` (replicas
that take any request signature) is the broken variant that check must catch.

Large requests (``Scenario.op_bytes``, ``random_scenario(op_bytes=...)``, ``pot pbft simulate
--op-bytes``): a share of the requests carry ops of up to ``op_bytes`` (``messages.MAX_OP_BYTES``
at most), so a view's PRE-PREPAREs reach the cap on the request bytes the window holds
(``window.limit``: the real one, about 8.4 MB at n = 4 and 4.8 MB at n = 7 for K = 4, so some
32 and 18 requests of 256 KiB). The primary then packs short batches and pads with empty ones,
backups refuse a Byzantine primary's overfull variants ``WINDOW_FULL``, and NEW-VIEWs
re-propose windows full of them. ``Result.window_full``, ``padding`` and ``window_peak`` say
whether the cap bound in a run: a large mode whose runs never reach it proves nothing.
``Result.wrongful_window_full`` counts the refusals that must never happen (a correct backup
not behind a correct primary refusing its PRE-PREPARE): a liveness bug, not a safety one (the
view changes away from a correct primary), which ``pot pbft simulate`` reports and fails on.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import cast

from pot.validator import actions, pbft
from pot.validator import messages as m
from pot.validator.rejections import Rejection


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """One seeded run."""

    n: int = 4
    f: int = 1
    seed: int = 0
    requests: int = 30
    heal_ms: int = 4_000
    """Faults (drops, partitions, Byzantine equivocation) stop here."""
    end_ms: int = 12_000
    drop: float = 0.05
    duplicate: float = 0.02
    max_delay_ms: int = 20
    partitions: int = 0
    """Random partitions (each splits the replicas in two for a while) before ``heal_ms``."""
    crashed: tuple[int, ...] = ()
    """Replicas that crash (at ``crash_ms``) and stay down."""
    crash_ms: int = 0
    byzantine: tuple[int, ...] = ()
    restarted: tuple[int, ...] = ()
    """Replicas that crash mid-run and restart from their simulated disk."""
    checkpoint_interval: int = 4
    batch_size: int = 8
    view_change_timeout_ms: int = 300
    retransmit_ms: int = 60
    tick_ms: int = 20
    normal_quorum: int | None = None
    """Set to 2f for the deliberately broken variant."""
    forgeable: bool = False
    """The other broken variant: replicas accept any signature on a replica's own requests."""
    op_bytes: int = 0
    """Large-request mode (0: off): ``large_share`` of the requests (drawn from the seed) carry
    an op of ``op_bytes`` bytes less up to a quarter; a Byzantine primary's variant
    PRE-PREPAREs may add made-up requests of that size (past the window cap)."""
    large_share: float = 0.75
    bursts: int = 0
    """Requests arrive in this many bursts (0: each at its own time): a burst is what fills a
    window, since a primary that keeps up orders one request per batch."""


@dataclass(slots=True, kw_only=True)
class Result:
    scenario: Scenario
    commits: int = 0
    executed: int = 0
    view_changes: int = 0
    violations: list[str] = field(default_factory=list)
    live: bool = True
    rejected: int = 0
    window_full: int = 0
    """PRE-PREPAREs correct replicas refused ``WINDOW_FULL`` (restarted ones' included)."""
    wrongful_window_full: int = 0
    """``WINDOW_FULL`` refusals that must not happen: a correct backup refused a PRE-PREPARE
    its correct primary sent in the backup's view, while that primary is (at delivery) in that
    view, not changing views, and the backup's h is not below the primary's. Every PRE-PREPARE
    of the view the backup then counts above its h, this one included, the primary holds above
    its own h (it sent them, or installed them from the same NEW-VIEW; both logs survive
    restarts), at the same ``window.cost``; and the primary packed its last request batch
    within ``window.limit`` (past it from the NEW-VIEW alone, it sends only exempt empty
    batches). A backup whose h lags may refuse (``window``). Reaching that check, the backup
    is in the view and not changing views. Not counted: a Byzantine sender or receiver, a
    primary since gone to another view. A liveness bug (a needless view change), not safety."""
    padding: int = 0
    """Empty batches correct primaries ordered because the next request did not fit."""
    window_peak: float = 0.0
    """The highest ``window_bytes / window_limit`` a correct replica reached."""

    @property
    def safe(self) -> bool:
        return not self.violations


class ChainApp:
    """A deterministic application whose state commits to the whole executed order."""

    def __init__(self) -> None:
        self.state = b"\0" * 32
        self.count = 0
        self.keys: set[tuple[str, int]] = set()
        self.done: set[tuple[str, int]] = set()

    def execute(self, request: m.Request, ctx: pbft.ExecContext) -> bytes:
        self.state = hashlib.sha256(self.state + request.digest()).digest()
        self.count += 1
        self.keys.add(request.key)
        return self.state

    def snapshot(self) -> bytes:
        return self.state + self.count.to_bytes(8, "big")

    def restore(self, data: bytes) -> None:
        self.state, self.count = data[:32], int.from_bytes(data[32:40], "big")


class SimCrypto:
    """Unforgeable-by-assumption signatures: an HMAC under a per-replica secret."""

    def __init__(
        self, rid: int, secrets: list[bytes], rng: random.Random, *, forgeable: bool = False
    ) -> None:
        self.rid, self.secrets, self.rng = rid, secrets, rng
        self.forgeable = forgeable

    def sign(self, data: bytes) -> bytes:
        return hashlib.blake2b(data, key=self.secrets[self.rid], digest_size=32).digest()

    def verify(self, replica: int, data: bytes, signature: bytes) -> bool:
        if not 0 <= replica < len(self.secrets):
            return False
        if self.forgeable and data.startswith(b"pot-pbft-request\0"):
            return True  # the broken variant (Scenario.forgeable)
        return (
            hashlib.blake2b(data, key=self.secrets[replica], digest_size=32).digest() == signature
        )

    def nonce(self) -> bytes:
        return self.rng.randbytes(8)


@dataclass(slots=True)
class Disk:
    """What ``pot.validator.persistence`` keeps, in memory (every record durable at once)."""

    view: int = 0
    stable: tuple[int, bytes, bytes] | None = None
    log: list[m.PrePrepare | m.Prepare | m.Commit | tuple[int, int, bytes]] = field(
        default_factory=list
    )

    def apply(self, a: actions.Action) -> None:
        if isinstance(a, actions.ViewEntered):
            self.view = max(self.view, a.view)
        elif isinstance(a, actions.Logged):
            self.log.append(a.msg)
        elif isinstance(a, actions.Committed):
            self.log.append((a.seq, a.view, a.digest))
        elif isinstance(a, actions.Stable):
            self.stable = (a.seq, a.digest, a.snapshot)
            self.log = [r for r in self.log if (r[0] if isinstance(r, tuple) else r.seq) > a.seq]

    def durable(self) -> actions.Durable:
        seq, d, snap = self.stable if self.stable else (0, b"", b"")
        return actions.Durable(
            view=self.view,
            seq=seq,
            digest=d,
            snapshot=snap,
            accepted=tuple(r for r in self.log if isinstance(r, m.PrePrepare)),
            sent=tuple(r for r in self.log if isinstance(r, m.Prepare | m.Commit)),
            committed=tuple(r for r in self.log if isinstance(r, tuple)),
        )


class Checker:
    """Safety: no two correct replicas commit different batches at one sequence number."""

    def __init__(self) -> None:
        self.committed: dict[int, tuple[bytes, int]] = {}
        self.violations: list[str] = []

    def commit(self, replica: int, seq: int, digest: bytes) -> None:
        first = self.committed.setdefault(seq, (digest, replica))
        if first[0] != digest:
            self.violations.append(
                f"seq {seq}: replica {replica} committed {digest.hex()[:12]}, "
                f"replica {first[1]} committed {first[0].hex()[:12]}"
            )


class Simulation:
    """The event loop of one run."""

    def __init__(self, s: Scenario) -> None:
        if not 0 <= s.op_bytes <= m.MAX_OP_BYTES:  # replicas would refuse them: no run is live
            raise ValueError(f"Scenario.op_bytes {s.op_bytes}: must be 0 to {m.MAX_OP_BYTES}")
        self.s = s
        self.rng = random.Random(s.seed)  # noqa: S311 (seeded on purpose: runs must replay)
        self.cfg = pbft.Config(
            n=s.n,
            f=s.f,
            checkpoint_interval=s.checkpoint_interval,
            batch_size=s.batch_size,
            view_change_timeout_ms=s.view_change_timeout_ms,
            retransmit_ms=s.retransmit_ms,
            normal_quorum=s.normal_quorum,
            open_clients=True,  # the simulated clients are c0..c4
        )
        self.secrets = [self.rng.randbytes(32) for _ in range(s.n)]
        self.apps = [ChainApp() for _ in range(s.n)]
        self.disks = [Disk() for _ in range(s.n)]
        self.replicas = [self._make(i, None) for i in range(s.n)]
        self.down: set[int] = set()
        self.groups: list[set[int]] | None = None
        self.queue: list[tuple[int, int, str, object]] = []
        self.counter = 0
        self.now = 0
        self.checker = Checker()
        self.keys: set[tuple[str, int]] = set()
        self.done: set[tuple[str, int]] = set()
        self.variants: dict[int, m.PrePrepare] = {}
        self.forged: set[tuple[str, int]] = set()
        """Keys of the requests Byzantine primaries forged under correct replicas' names."""
        self.window_full = 0  # WINDOW_FULL refusals of replicas since replaced by a restart
        self.wrongful: list[str] = []  # ``Result.wrongful_window_full``, described
        self.padded: set[tuple[int, int]] = set()
        self.window_peak = 0

    def _make(self, i: int, durable: actions.Durable | None) -> pbft.Replica:
        self.apps[i] = ChainApp()
        crypto = SimCrypto(
            i,
            self.secrets,
            random.Random(self.rng.random()),  # noqa: S311 (seeded)
            forgeable=self.s.forgeable,
        )
        return pbft.Replica(
            config=self.cfg, replica_id=i, app=self.apps[i], crypto=crypto, durable=durable
        )

    def at(self, t: int, kind: str, payload: object) -> None:
        self.counter += 1
        heapq.heappush(self.queue, (t, self.counter, kind, payload))

    # ----------------------------------------------------------- network

    def _reachable(self, a: int, b: int) -> bool:
        if a in self.down or b in self.down:
            return False
        return self.groups is None or any(a in g and b in g for g in self.groups)

    def send(self, src: int, dst: int, msg: m.Message) -> None:
        if not self._reachable(src, dst):
            return
        faulty = self.now < self.s.heal_ms
        if faulty and self.rng.random() < self.s.drop:
            return
        copies = 2 if faulty and self.rng.random() < self.s.duplicate else 1
        for _ in range(copies):
            delay = self.rng.randint(1, self.s.max_delay_ms)
            self.at(self.now + delay, "deliver", (dst, src, msg))

    def perform(self, i: int, acts: list[actions.Action]) -> None:
        for a in acts:
            self.disks[i].apply(a)
            if isinstance(a, actions.Send):
                if i in self.s.byzantine:
                    self._byzantine_send(i, a)
                else:
                    self._fanout(i, a.to, a.msg)
            elif isinstance(a, actions.Committed) and i not in self.s.byzantine:
                self.checker.commit(i, a.seq, a.digest)
            elif isinstance(a, actions.Executed) and i not in self.s.byzantine:
                self.done.update(r.key for r in a.requests)
        if self.s.op_bytes and i not in self.s.byzantine:
            self._watch_window(i, acts)

    def _watch_window(self, i: int, acts: Iterable[actions.Action]) -> None:
        """Large mode: whether the window cap bound (``Result.window_full`` and the rest)."""
        self.window_peak = max(self.window_peak, self.replicas[i].window_bytes)
        for a in acts:
            msg = a.msg if isinstance(a, actions.Send) else None
            if isinstance(msg, m.PrePrepare) and not msg.batch and msg.nonce:
                self.padded.add((msg.view, msg.seq))  # not a NEW-VIEW's null batch (no nonce)

    def _fanout(self, i: int, to: int | None, msg: m.Message) -> None:
        for dst in range(self.s.n) if to is None else (to,):
            if dst != i:
                self.send(i, dst, msg)

    # ----------------------------------------------------------- adversary

    def _byzantine_send(self, i: int, a: actions.Send) -> None:
        """Equivocate and lie, but only while the network is still faulty (so liveness can return)."""
        rng, msg = self.rng, a.msg
        if self.now >= self.s.heal_ms:
            self._fanout(i, a.to, msg)
            return
        dsts = [d for d in (range(self.s.n) if a.to is None else (a.to,)) if d != i]
        if isinstance(msg, m.PrePrepare):
            variant = self._variant(msg)
            for d in dsts:
                self.send(i, d, variant if rng.random() < 0.5 else msg)
        elif isinstance(msg, m.Prepare | m.Commit):
            variant_d = (
                self.variants[msg.seq].digest if msg.seq in self.variants else rng.randbytes(32)
            )
            for d in dsts:
                r = rng.random()
                if r < 0.4:
                    self.send(i, d, replace(msg, digest=variant_d))
                elif r < 0.8:
                    self.send(i, d, msg)
        elif isinstance(msg, m.ViewChange):
            lie = replace(msg, prepared=(), preprepared=(), batches=())
            lie = replace(lie, signature=self.replicas[i].crypto.sign(m.signing_bytes(lie)))
            junk = replace(msg, signature=rng.randbytes(32))  # gets its sender distrusted
            for d in dsts:
                if rng.random() < 0.2:
                    self.send(i, d, junk)
                self.send(i, d, lie if rng.random() < 0.7 else msg)
        elif isinstance(msg, m.Checkpoint):
            for d in dsts:
                self.send(
                    i, d, replace(msg, digest=rng.randbytes(32)) if rng.random() < 0.5 else msg
                )
        elif isinstance(msg, m.NewView):
            if rng.random() < 0.5:
                for d in dsts:
                    self.send(i, d, msg)
        else:
            for d in dsts:
                self.send(i, d, msg)

    def _variant(self, pp: m.PrePrepare) -> m.PrePrepare:
        v = self.variants.get(pp.seq)
        if v is None or v.view != pp.view:
            batch = tuple(reversed(pp.batch))[: max(1, len(pp.batch) - 1)]
            victims = [i for i in range(self.s.n) if i not in self.s.byzantine]
            if victims and self.rng.random() < 0.5:
                # A request the victim never sent, under its name: it cannot sign it.
                forged = m.Request(
                    client=pbft.client_name(self.rng.choice(victims)),
                    ts=2**40 + pp.seq,
                    op=b"forged",
                    sig=self.rng.randbytes(32),
                )
                self.forged.add(forged.key)
                batch = (*batch, forged)
            if self.s.op_bytes and self.rng.random() < 0.5:
                # Past the window cap: made-up requests as large as the run's (open clients).
                fat = b"x" * self.s.op_bytes
                batch += tuple(
                    m.Request(client="cx", ts=2**41 + pp.seq * 64 + j, op=fat)
                    for j in range(self.s.batch_size - len(batch))
                )
            nonce = self.rng.randbytes(8)
            v = m.pre_prepare(
                view=pp.view, seq=pp.seq, nonce=nonce, batch=batch, replica=pp.replica
            )
            self.variants[pp.seq] = v
        return v

    # ----------------------------------------------------------- run

    def run(self) -> Result:
        s, rng = self.s, self.rng
        correct = [i for i in range(s.n) if i not in s.byzantine and i not in s.crashed]
        bursts = [rng.randint(0, s.heal_ms) for _ in range(s.bursts)]
        for k in range(s.requests):
            t = rng.choice(bursts) + rng.randint(0, 50) if bursts else rng.randint(0, s.heal_ms)
            at = rng.choice(correct)
            if k % 5 == 4:  # a replica's own request (its API's): signed, sent by it alone
                own = m.Request(client=pbft.client_name(at), ts=k, op=self._op(b"own%d" % k))
                self.at(t, "submit", (at, pbft.signed(own, self.replicas[at].crypto)))
            else:
                req = m.Request(client=f"c{k % 5}", ts=k, op=self._op(b"op%d" % k))
                self.at(t, "submit", (at, req))
        for i in range(s.n):
            self.at(rng.randint(0, s.tick_ms), "tick", i)
        for i in s.crashed:
            self.at(s.crash_ms, "crash", i)
        for i in s.restarted:
            t = rng.randint(s.heal_ms // 4, s.heal_ms // 2)
            self.at(t, "crash", i)
            self.at(t + rng.randint(200, s.heal_ms // 2), "restart", i)
        for _ in range(s.partitions):
            t = rng.randint(0, s.heal_ms - 200)
            self.at(t, "partition", None)
            self.at(min(s.heal_ms, t + rng.randint(100, 1500)), "heal", None)
        self.at(s.heal_ms, "heal", None)
        while self.queue:
            t, _, kind, payload = heapq.heappop(self.queue)
            if t > s.end_ms:
                break
            self.now = t
            self._event(kind, payload)
        return self._result(correct)

    def _op(self, name: bytes) -> bytes:
        """A request's op: ``name``, or in large mode (drawn from the seed) padded to near
        ``op_bytes``. Small runs draw nothing, so their seeds replay as before."""
        s = self.s
        if not s.op_bytes or self.rng.random() >= s.large_share:
            return name
        return name.ljust(self.rng.randint(s.op_bytes - s.op_bytes // 4, s.op_bytes), b".")

    def _event(self, kind: str, payload: object) -> None:
        s = self.s
        if kind == "deliver":
            assert isinstance(payload, tuple)
            dst, src, msg = cast("tuple[int, int, m.Message]", payload)
            if dst not in self.down and self._reachable(src, dst):
                rep = self.replicas[dst]
                if type(msg) is not m.PrePrepare:
                    self.perform(dst, rep.on_message(msg, src))
                    return
                full = rep.rejected[Rejection.WINDOW_FULL]
                self.perform(dst, rep.on_message(msg, src))
                if rep.rejected[Rejection.WINDOW_FULL] != full:
                    self._window_refused(dst, src, msg)
        elif kind == "tick":
            i = payload
            assert isinstance(i, int)
            if i not in self.down:
                self.perform(i, self.replicas[i].on_tick(self.now))
            self.at(self.now + s.tick_ms, "tick", i)
        elif kind == "submit":
            assert isinstance(payload, tuple)
            i, req = cast("tuple[int, m.Request]", payload)
            self.keys.add(req.key)
            if req.key in self.done:
                return
            alive = [r for r in range(s.n) if r not in self.down and r not in s.byzantine]
            if req.client in self.replicas[i].bound_clients:
                # A replica's own request: only it sends it (after a restart, too).
                if i not in self.down:
                    self.perform(i, self.replicas[i].submit(req))
                self.at(self.now + 1000, "submit", (i, req))
                return
            if i not in alive:  # the client tries another replica
                i = self.rng.choice(alive)
            self.perform(i, self.replicas[i].submit(req))
            # A client that hears nothing retries elsewhere (its replica may have crashed).
            self.at(self.now + 1000, "submit", (self.rng.choice(alive), req))
        elif kind == "crash":
            assert isinstance(payload, int)
            self.down.add(payload)
        elif kind == "restart":
            i = payload
            assert isinstance(i, int)
            self.down.discard(i)
            self.window_full += self.replicas[i].rejected[Rejection.WINDOW_FULL]
            self.replicas[i] = self._make(i, self.disks[i].durable())
            self.replicas[i].now = self.now
        elif kind == "partition":
            members = list(range(s.n))
            self.rng.shuffle(members)
            cut = self.rng.randint(1, s.n - 1)
            self.groups = [set(members[:cut]), set(members[cut:])]
        elif kind == "heal":
            self.groups = None

    def _window_refused(self, dst: int, src: int, pp: m.PrePrepare) -> None:
        """Replica ``dst`` refused ``pp`` from ``src`` WINDOW_FULL: wrongful when both are
        correct and ``dst`` is not behind ``src`` (``Result.wrongful_window_full``). Reaching
        that check, ``dst`` is in ``pp.view``, not changing views, and ``src`` its primary."""
        if dst in self.s.byzantine or src in self.s.byzantine:
            return
        backup, primary = self.replicas[dst], self.replicas[src]
        if primary.view != pp.view or primary.view_changing or backup.h < primary.h:
            return
        self.wrongful.append(
            f"t={self.now} view {pp.view} seq {pp.seq}: replica {dst} (h {backup.h}, "
            f"{backup.window_bytes} B) refused primary {src} (h {primary.h}, "
            f"{primary.window_bytes} B) WINDOW_FULL"
        )

    def _result(self, correct: list[int]) -> Result:
        r = Result(scenario=self.s, violations=list(self.checker.violations))
        r.commits = len(self.checker.committed)
        r.window_full = self.window_full + sum(
            self.replicas[i].rejected[Rejection.WINDOW_FULL]
            for i in range(self.s.n)
            if i not in self.s.byzantine
        )
        r.wrongful_window_full = len(self.wrongful)
        r.padding = len(self.padded)
        r.window_peak = self.window_peak / self.replicas[0].window_limit
        live = [i for i in correct if i not in self.down]
        states: dict[int, bytes] = {}
        for i in live:
            rep = self.replicas[i]
            r.view_changes += rep.stats["view_changes"]
            r.rejected += sum(rep.rejected.values())
            prev = states.setdefault(rep.last_exec, self.apps[i].snapshot())
            if prev != self.apps[i].snapshot():
                r.violations.append(f"replica {i}: state at seq {rep.last_exec} differs")
            for client, ts in sorted(self.forged & self.apps[i].keys):
                r.violations.append(f"replica {i} executed a request forged under {client} ({ts})")
        # Liveness as a PBFT client sees it (TOCS §4.6): every request executed by at least f+1
        # correct replicas (enough matching replies). A correct replica left alone in a higher
        # view follows by checkpoints only until the next view change, as in the paper.
        counts = sorted((self.apps[i].count for i in live), reverse=True)
        r.executed = counts[0] if counts else 0
        r.live = len(counts) > self.s.f and counts[self.s.f] >= len(self.keys)
        return r


LARGE_REQUESTS = 80
"""Requests per large-mode run: with ``batch_size`` 8 and K = 4, the window (h, h + 8] holds
up to 64, about twice what the cap lets it at n = 4 (some 32 of 256 KiB)."""


def simulate(s: Scenario) -> Result:
    """Run one scenario."""
    return Simulation(s).run()


def random_scenario(
    *,
    n: int,
    faulty: int,
    seed: int,
    broken: bool = False,
    forgeable: bool = False,
    op_bytes: int = 0,
) -> Scenario:
    """A scenario with ``faulty`` replicas, each crashed, restarted or Byzantine, a random net,
    and in some runs correct replicas restarted as well. ``broken``/``forgeable``: the
    deliberately broken variants (see the module docstring). ``op_bytes``: large requests
    (``Scenario.op_bytes``), LARGE_REQUESTS of them, so that the window cap binds."""
    rng = random.Random(seed * 7919 + n)  # noqa: S311 (seeded on purpose)
    f = (n - 1) // 3
    kinds = [rng.choice(("crash", "byzantine", "byzantine", "restart")) for _ in range(faulty)]
    ids = rng.sample(range(n), faulty)
    pick = {k: tuple(i for i, kk in zip(ids, kinds, strict=True) if kk == k) for k in set(kinds)}
    sc = Scenario(
        n=n,
        f=f,
        seed=seed,
        drop=rng.choice((0.0, 0.02, 0.1, 0.2)),
        duplicate=rng.choice((0.0, 0.05)),
        max_delay_ms=rng.choice((2, 10, 40)),
        partitions=rng.choice((0, 0, 1, 3)),
        crashed=pick.get("crash", ()),
        crash_ms=rng.randint(0, 2000),
        byzantine=pick.get("byzantine", ()),
        restarted=pick.get("restart", ()),
        normal_quorum=2 * f if broken else None,
        forgeable=forgeable,
    )
    if op_bytes:  # drawn after the rest, so small runs keep their scenarios
        sc = replace(sc, op_bytes=op_bytes, requests=LARGE_REQUESTS, bursts=rng.choice((1, 2)))
    if rng.random() < 0.3:
        # A crash that comes back from its own disk is not a fault (PBFT's replicas recover
        # from stable storage): restart up to f+1 *correct* replicas too, on top of the f
        # faulty ones. (Restarts of correct replicas beside Byzantine ones are where a
        # replica resuming its view without the NEW-VIEW was unsafe, test_review_restart_view;
        # and where one came back alone in a higher view holding a request nobody else knew.)
        others = [i for i in range(n) if i not in ids]
        extra = rng.sample(others, rng.randint(1, min(len(others), f + 1)))
        sc = replace(sc, restarted=(*sc.restarted, *sorted(extra)))
    return sc
