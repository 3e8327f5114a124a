"""Audits: replay sampled segments with the trainer's ``verify_segment``, a few at a time.

Replays are the validators' expensive work (a segment's k training steps), so
they run in worker threads behind a semaphore of ``verification.maxConcurrent``
(ValidatorSet spec) while the PBFT loop keeps turning. ``verify_segment``
fetches checkpoints from the miner's ``storeUrl`` through a local
content-addressed cache (``pot.store.LayeredStore``), so every blob is
hash-checked before a replay trusts it.

Memory against a hostile store has two bounds (docs/protocol.md, "storeUrl"):

- per blob, the same on every replica: a checkpoint is read only up to the size any
  checkpoint of the task's model can take (``checkpoints.size_cap`` of the initial one,
  which the registered spec fixes); over it the verdict is ``OVERSIZED_BLOB``. Being a
  function of replicated state, it gives every honest replica the same verdict, so 2f+1
  matching verdicts still form.
- per replica, local: ``--audit-memory`` bytes (``store.Budget``) shared by the
  concurrent audits' fetches from miners' stores. It only makes a fetch wait for room
  (before its deadline starts; a fetch larger than the budget waits to run alone), never
  refuses one, so a replica's configuration can delay its verdicts but not change them.

``Auditor`` is the seam: the daemon uses ``ReplayAuditor``; tests and the
benchmark plug in ``Scripted`` auditors without torch.

An audit is always of a registered task: its spec and ``uid`` come from the registration
the replica executed (the operator's signed ``Register``), never from the segment. The
replay's run seed mixes in that uid, so a chain copied from a twin task (same spec, other
object) does not replay as this one's.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

#: The verdict reason of an audit that failed on the validator's side (a bug,
#: a missing dependency): never the miner's fault, so never slashed for
#: (``pot.validator.app``). verify_segment itself never raises for miner input.
AUDIT_ERROR = "AUDIT_ERROR"

#: Bytes the fetches of one replica's audits may hold at once (``--audit-memory``).
DEFAULT_MEMORY = 8 << 30

log = logging.getLogger(__name__)


class Auditor(Protocol):
    def audit(
        self, task: str, spec: Mapping[str, Any], uid: str, segment: Mapping[str, Any]
    ) -> tuple[bool, str]:
        """(valid, reason name or "") for one segment of the task object ``uid``; never
        raises."""
        ...


class ReplayAuditor:
    """Re-executes the segment (``pot.trainer.verification.verify_segment``)."""

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        device: str = "cpu",
        *,
        memory: int = DEFAULT_MEMORY,
    ) -> None:
        from pot import store

        self.cache_dir = cache_dir
        self.device = device
        self.budget = store.Budget(memory)

    def audit(
        self, task: str, spec: Mapping[str, Any], uid: str, segment: Mapping[str, Any]
    ) -> tuple[bool, str]:
        from pot import store
        from pot.trainer import segments, tasks, verification

        try:
            seg = segments.parse(segment)
            policy = verification.Policy(
                task=task, spec=tasks.from_spec(spec, uid=uid), device=self.device
            )
            blobs = store.LayeredStore(
                store.FilesystemStore(self.cache_dir),
                store.HttpStore(seg.store_url, budget=self.budget),
            )
            verdict = verification.verify_segment(seg, blobs, policy)
        except segments.Rejected as exc:
            return False, exc.reason.name
        except Exception:  # a bug or an environment fault (not the miner's)
            log.exception("audit of %s segment %s failed", task, segment.get("index"))
            return False, AUDIT_ERROR
        return verdict.valid, "" if verdict.reason is None else verdict.reason.name


class Scripted:
    """An auditor that rejects the segments of listed miners (tests, benchmark)."""

    def __init__(
        self, reject_miners: frozenset[str] = frozenset(), reason: str = "LOSS_MISMATCH"
    ) -> None:
        self.reject = {a.lower() for a in reject_miners}
        self.reason = reason

    def audit(
        self, task: str, spec: Mapping[str, Any], uid: str, segment: Mapping[str, Any]
    ) -> tuple[bool, str]:
        if str(segment.get("miner", "")).lower() in self.reject:
            return False, self.reason
        return True, ""


class Auditing:
    """Bounded-concurrency runner; reports each verdict through ``done``."""

    def __init__(
        self,
        auditor: Auditor,
        *,
        max_concurrent: int,
        done: Callable[[str, Mapping[str, Any], bool, str], Awaitable[None]],
    ) -> None:
        self.auditor = auditor
        self.sem = asyncio.Semaphore(max_concurrent)
        self.done = done
        self.running: set[tuple[str, str, int]] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    def schedule(
        self, task: str, registered: Mapping[str, Any], segment: Mapping[str, Any]
    ) -> None:
        """Audit ``segment`` of ``task`` against ``registered``, the task's record in the
        replicated state (its ``spec`` and ``uid``)."""
        key = (task, str(segment.get("miner", "")).lower(), int(segment.get("index", -1)))
        if key in self.running:
            return
        self.running.add(key)
        spec, uid = registered["spec"], str(registered["uid"])
        t = asyncio.create_task(self._run(key, task, spec, uid, segment))
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def _run(
        self,
        key: tuple[str, str, int],
        task: str,
        spec: Mapping[str, Any],
        uid: str,
        seg: Mapping[str, Any],
    ) -> None:
        try:
            async with self.sem:
                valid, reason = await asyncio.to_thread(self.auditor.audit, task, spec, uid, seg)
            await self.done(task, seg, valid, reason)
        finally:
            self.running.discard(key)
