"""One validator process: the PBFT core wired to transport, disk, HTTP API and audits.

The core (``pbft.Replica``) is pure; this shell owns everything with side
effects and serialises all calls into the core on one asyncio loop: frames
from the transport, requests from the API, a clock tick every ``tick_ms``.
Actions come back and are performed in order: sends (encoded once per
broadcast), disk writes, and wake-ups of API handlers waiting for their
request to execute.

Log before send, with group commit: a PREPARE or COMMIT waits in ``outbox``
until its ``Logged`` record is durable (PBFT needs no record before any other
message: ``actions.Logged``; so PRE-PREPAREs, checkpoints and beacons go at
once, and reordering them ahead of waiting votes is the kind of reordering the
protocol tolerates anyway). One callback per event-loop turn (``_release``)
writes every record logged during that turn, however many messages from
however many peers it handled, and starts a single ``fdatasync`` for them on
a worker thread; the votes that waited go out when it returns, while the loop
meanwhile keeps executing and logging the next group.

Audits and allocation signatures are driven from the replicated state, not
from events, so a replica that caught up by state transfer still does its
share: every ``housekeeping_s`` it asks the app which sampled segments it has
not voted on and which allocations it has not signed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pot import errors, files, keys, signing
from pot.settlement import allocations
from pot.validator import (
    actions,
    api,
    auditing,
    auth,
    pbft,
    persistence,
    retransmitting,
    transport,
    verdicts,
)
from pot.validator import app as vapp
from pot.validator import messages as m
from pot.validator.rejections import Rejection

log = logging.getLogger(__name__)

RESUBMIT_S = 10.0
BENCH_OP = b'{"op":"noop"}'
"""What the bench orders: a well-formed request of a kind the application ignores."""


def _fdatasync(fd: int) -> None:
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


class Node:
    def __init__(
        self,
        *,
        peers: auth.Peers,
        me: int,
        key: keys.Key,
        data_dir: str | Path,
        auditor: auditing.Auditor,
        max_concurrent_audits: int = 1,
        tick_ms: int = 50,
        housekeeping_s: float = 0.2,
        config: pbft.Config | None = None,
    ) -> None:
        self.peers = peers
        self.me = me
        self.key = key
        self.auth = auth.Auth(me, key, peers)
        self.cfg = config or peers.config()
        self.app = vapp.App(
            vapp.Validators(
                addresses=tuple(p.address for p in peers.replicas),
                stakes=peers.stakes,
                chain_id=peers.chain_id,
                contract=peers.contract,
                f=peers.f,
                operator=peers.operator,
            )
        )
        self.disk = persistence.Disk(data_dir)
        durable = self.disk.load()
        try:
            self.core = pbft.Replica(
                config=self.cfg, replica_id=me, app=self.app, crypto=self.auth, durable=durable
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise errors.ConfigError(
                f"{data_dir}: the stable checkpoint on disk cannot be installed ({exc}); move "
                "this directory away and restart: the replica catches up by state transfer"
            ) from exc
        self.tick_ms = tick_ms
        self.housekeeping_s = housekeeping_s
        self.waiters: dict[tuple[str, int], asyncio.Future[bytes]] = {}
        self.inflight_segments: set[str] = set()
        self.heard: dict[int, float] = {}
        self.started = time.monotonic()
        self.client = pbft.client_name(me)
        self.last_ts = 0
        self.segment_rejections: dict[str, int] = {}
        self.outbox: list[actions.Send] = []
        self.release_scheduled = False
        self.syncing = False
        self.sync_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pbft-fsync")
        self.transport = transport.Transport(
            me=me, authn=self.auth, on_messages=self.on_messages, on_reject=self.core.reject
        )
        self.auditing = auditing.Auditing(
            auditor, max_concurrent=max_concurrent_audits, done=self._verdict
        )
        self.signed: dict[str, float] = {}
        self.voted: dict[tuple[str, str, int], float] = {}
        # Private audits (pot.validator.app, step 3): this replica's own coin key;
        # per open task, each segment's draw (True: a private audit still owed; False:
        # not drawn, or replayed and found valid), so every coin is drawn once; and
        # when it last said "audited". Closed tasks are dropped.
        self.coin = verdicts.coin_secret(key.secret)
        self.owed: dict[str, dict[str, bool]] = {}
        self.audited_at: dict[str, float] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.runner: Any = None

    # ------------------------------------------------------------ lifecycle

    async def start(self, bind: str = "0.0.0.0") -> None:  # noqa: S104 (pods listen on all interfaces)
        me = self.peers.replicas[self.me]
        await self.transport.start(bind, me.pbft_port)
        self.runner = await api.serve(self, bind, me.http_port)
        self.tasks.append(asyncio.create_task(self._ticker(), name="pbft-tick"))
        self.tasks.append(asyncio.create_task(self._housekeeping(), name="pbft-housekeeping"))

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self.transport.stop()
        if self.runner is not None:
            await self.runner.cleanup()
        self.sync_pool.shutdown(wait=True)
        self.disk.close()

    # ------------------------------------------------------------ core I/O

    def _now_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    def perform(self, acts: list[actions.Action]) -> None:
        for a in acts:
            if isinstance(a, actions.Send):
                if isinstance(a.msg, m.Prepare | m.Commit) and (self.syncing or self.disk.unsynced):
                    self.outbox.append(a)  # a vote waits until its own record is durable
                    self._schedule_release()
                else:
                    self._send(a)  # nothing else needs a record on disk first
            elif isinstance(a, actions.Executed):
                if self.waiters:  # only the replica a client asked waits for results
                    for req, result in zip(a.requests, a.results, strict=True):
                        fut = self.waiters.pop(req.key, None)
                        if fut is not None and not fut.done():
                            fut.set_result(result)
            else:
                self.disk.apply(a)

    def _send(self, a: actions.Send) -> None:
        data = m.encode(a.msg)
        if a.to is None:
            for p in range(self.cfg.n):
                if p != self.me:
                    self.transport.send(p, data)
        elif a.to != self.me:
            self.transport.send(a.to, data)

    def _schedule_release(self) -> None:
        if not self.release_scheduled and not self.syncing:
            self.release_scheduled = True
            asyncio.get_running_loop().call_soon(self._release)

    def _release(self) -> None:
        """Group commit: one fdatasync for every record logged this loop turn, then the sends."""
        self.release_scheduled = False
        if self.syncing:
            return  # _synced schedules the next group
        group, self.outbox = self.outbox, []
        if not self.disk.unsynced:
            for a in group:
                self._send(a)
            return
        fd = self.disk.begin_sync()
        self.syncing = True
        fut = asyncio.get_running_loop().run_in_executor(self.sync_pool, _fdatasync, fd)
        fut.add_done_callback(functools.partial(self._synced, group))

    def _synced(self, group: list[actions.Send], fut: asyncio.Future[None]) -> None:
        self.syncing = False
        if fut.cancelled() or fut.exception() is not None:
            # Not durable: these messages must not leave (PBFT may lose them; it must not
            # send what it could forget). The records are logged again with the next group.
            log.error("pbft log fsync failed: %r; %d messages held back", fut, len(group))
            self.disk.unsynced = True
        else:
            for a in group:
                self._send(a)
        if self.outbox or self.disk.unsynced:
            self._schedule_release()

    def on_messages(self, peer: int, payloads: list[bytes]) -> None:
        self.heard[peer] = time.monotonic()
        core = self.core
        for payload in payloads:
            msg = m.decode(payload)
            if isinstance(msg, Rejection):
                core.reject(msg)
                continue
            self.perform(core.on_message(msg, peer))

    async def _ticker(self) -> None:
        while True:
            self.perform(self.core.on_tick(self._now_ms()))
            if not (self.disk.unsynced or self.syncing):
                self.disk.flush()
            await asyncio.sleep(self.tick_ms / 1000)

    def _ts(self) -> int:
        # Strictly increasing per client, and above anything from a previous run (µs clock).
        self.last_ts = max(self.last_ts + 1, time.time_ns() // 1000)
        return self.last_ts

    async def submit(self, op: bytes, timeout: float) -> dict[str, Any] | None:
        """Order ``op``; its execution result, or None if not executed within ``timeout``."""
        req = pbft.signed(m.Request(client=self.client, ts=self._ts(), op=op), self.core.crypto)
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.waiters[req.key] = fut
        try:
            self.perform(self.core.submit(req))
            raw = await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            return None
        finally:
            # However the wait ends: refused at submit, not executed in time (it may never
            # be), or the handler cancelled. Otherwise one entry stayed per such request.
            if self.waiters.get(req.key) is fut:
                del self.waiters[req.key]
        result: dict[str, Any] = json.loads(raw)
        return result

    def submit_nowait(self, op: bytes) -> None:
        req = pbft.signed(m.Request(client=self.client, ts=self._ts(), op=op), self.core.crypto)
        self.perform(self.core.submit(req))

    async def bench_load(self, *, seconds: float, outstanding: int, out: Path) -> None:
        """Closed-loop load for ``bench/pbft.py``: keep ``outstanding`` no-op requests in flight,
        measure submit → local execution (committed at 2f+1), write JSON to ``out``."""
        if not self.core.cfg.open_clients:  # its client "bench" is no replica's
            raise errors.ConfigError("--bench-seconds needs pbft.openClients in peers.json")
        latencies: list[float] = []
        sent: dict[tuple[str, int], float] = {}
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        ts = 0

        def one() -> None:
            nonlocal ts
            ts += 1
            req = m.Request(client="bench", ts=ts, op=BENCH_OP)
            fut: asyncio.Future[bytes] = loop.create_future()
            self.waiters[req.key] = fut
            sent[req.key] = time.perf_counter()
            fut.add_done_callback(functools.partial(finished, req.key))
            self.perform(self.core.submit(req))

        def finished(key: tuple[str, int], _fut: asyncio.Future[bytes]) -> None:
            latencies.append(time.perf_counter() - sent.pop(key))
            if not done.is_set():
                one()

        # Start only once every peer is up and connected: with 16 interpreters starting on two
        # cores (about 1.7 s of CPU each, mostly imports), loading earlier measures start-up.
        peers = self.cfg.n - 1
        while len(self.transport.connected) < peers:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # their own connections to each other
        start = time.perf_counter()
        warm = 0
        for _ in range(outstanding):
            one()
        await asyncio.sleep(max(1.0, seconds / 4))
        warm, t_warm = len(latencies), time.perf_counter()
        out.with_name(out.name + ".start").write_text("")  # the harness's CPU window opens
        await asyncio.sleep(seconds)
        done.set()
        measured = latencies[warm:]
        elapsed = time.perf_counter() - t_warm
        measured.sort()
        # Whole or not at all: the harness reads the file as soon as it exists.
        files.write_atomic(
            out,
            json.dumps(
                {
                    "requests": len(measured),
                    "seconds": elapsed,
                    "rps": len(measured) / elapsed if elapsed else 0.0,
                    "p50_ms": 1000 * measured[len(measured) // 2] if measured else None,
                    "p99_ms": 1000 * measured[int(len(measured) * 0.99)] if measured else None,
                    "batches": self.core.stats["batches"],
                    "fsyncs": self.disk.syncs,
                    "frames_sent": self.transport.frames_sent,
                    "frames_received": self.transport.frames_received,
                    "total_s": time.perf_counter() - start,
                }
            ).encode(),
        )

    # ------------------------------------------------------------ status

    def ready(self) -> tuple[bool, str]:
        core = self.core
        if core.view_changing:
            return False, f"changing to view {core.view}"
        if not core.ready:
            return False, "restarted: catching up until the next view"
        if core.is_primary:
            return True, f"primary of view {core.view}"
        last = self.heard.get(core.primary)
        # An idle primary beacons every IDLE_FACTOR periods: allow for three missed ones.
        limit = max(3 * retransmitting.IDLE_FACTOR * self.cfg.retransmit_ms / 1000, 1.0)
        if last is None or time.monotonic() - last > limit:
            return False, f"no word from primary {core.primary}"
        return True, f"view {core.view}, primary {core.primary}"

    def status(self) -> dict[str, Any]:
        core = self.core
        return {
            "replica": self.me,
            "n": self.cfg.n,
            "f": self.cfg.f,
            "view": core.view,
            "primary": core.primary,
            "lastCommittedSeq": core.last_exec,
            "stableCheckpoint": core.h,
            "ready": self.ready()[0],
        }

    def count_segment_rejection(self, reason: str) -> None:
        self.segment_rejections[reason] = self.segment_rejections.get(reason, 0) + 1

    # ------------------------------------------------------------ audits and signatures

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(self.housekeeping_s)
            try:
                now = time.monotonic()
                for task, seg in self.app.pending_audits(self.me):
                    key = (task, str(seg["miner"]).lower(), int(seg["index"]))
                    if now - self.voted.get(key, -1e9) > RESUBMIT_S:  # voted, not yet ordered
                        self.auditing.schedule(task, self.app.tasks[task], seg)
                busy: set[str] = set()  # tasks with private audits still owed
                for task, digest, rate, seg in self.app.private_candidates():
                    draws = self.owed.setdefault(task, {})
                    if digest not in draws:
                        draws[digest] = verdicts.audit_coin(self.coin, task, digest) < rate
                    if not draws[digest]:
                        continue
                    busy.add(task)
                    key = (task, str(seg["miner"]).lower(), int(seg["index"]))
                    if now - self.voted.get(key, -1e9) > RESUBMIT_S:  # a challenge in flight
                        self.auditing.schedule(task, self.app.tasks[task], seg)
                for task in self.app.awaiting_audited(self.me):
                    if task not in busy and now - self.audited_at.get(task, -1e9) > RESUBMIT_S:
                        self._say_audited(task)
                for task in list(self.owed):  # closed (or gone): no draw is needed again
                    if (self.app.tasks.get(task) or {}).get("allocation", True) is not None:
                        del self.owed[task]
                for task in self.app.unsigned_allocations(self.me):
                    self._sign_allocation(task)
            except Exception:  # never let housekeeping die with the process still serving
                log.exception("housekeeping failed")

    async def _verdict(self, task: str, seg: Mapping[str, Any], valid: bool, reason: str) -> None:
        rec = (
            self.app.tasks.get(task, {})
            .get("segments", {})
            .get(f"{str(seg['miner']).lower()}/{seg['index']}")
        )
        if rec is None:
            return
        if not rec["sampled"]:  # a private audit
            if valid:  # passed: nothing to order, unless the segment turns public later
                self.owed.setdefault(task, {})[rec["digest"]] = False
                return
            log.warning(
                "challenge: %s segment %s of %s failed my replay (%s)",
                task,
                rec["index"],
                rec["miner"],
                reason,
            )
        elif rec["decided"] is not None:
            return
        msg = verdicts.verdict_message(
            task=task,
            miner=rec["miner"],
            index=rec["index"],
            digest=rec["digest"],
            valid=valid,
            reason=reason,
        )
        self.voted[(task, rec["miner"].lower(), rec["index"])] = time.monotonic()
        sig = signing.sign(
            self.key, verdicts.VERDICT_DOMAIN, verdicts.VERDICT_TYPES, "Verdict", msg
        )
        self.submit_nowait(
            vapp.op(
                "verdict",
                task=task,
                miner=rec["miner"],
                index=rec["index"],
                segment=rec["digest"],
                valid=valid,
                reason=reason,
                replica=self.me,
                signature=sig,
            )
        )

    def _say_audited(self, task: str) -> None:
        """Order this replica's signed "done with my private audits of ``task``"."""
        self.audited_at[task] = time.monotonic()
        sig = signing.sign(
            self.key, verdicts.VERDICT_DOMAIN, verdicts.AUDITED_TYPES, "Audited", {"task": task}
        )
        self.submit_nowait(vapp.op("audited", task=task, replica=self.me, signature=sig))

    def _sign_allocation(self, task: str) -> None:
        alloc = self.app.allocation(task)
        if alloc is None:
            return
        if time.monotonic() - self.signed.get(task, -1e9) < RESUBMIT_S:
            return
        self.signed[task] = time.monotonic()
        sig = allocations.sign(self.key, alloc, self.peers.chain_id, self.peers.contract)
        self.submit_nowait(vapp.op("allocsig", task=task, round=0, replica=self.me, signature=sig))
