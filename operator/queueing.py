"""A deduplicating, delaying work queue (controller-runtime's workqueue, in asyncio).

Every watch event only *enqueues* the key of the object it concerns; workers
reconcile keys from the queue. Three properties make the operator level
triggered and cheap: a key queued many times is reconciled once; one key is
never reconciled by two workers at once (a key added while it is being
processed runs again right after); and ``add(key, delay)`` keeps the earliest
due time, so polling (validators' progress) and event-driven wake-ups share
one mechanism.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import Hashable


class WorkQueue:
    """Keys due at a time; ``get`` waits for the next due key not in progress."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Hashable]] = []
        self._due: dict[Hashable, float] = {}
        self._busy: set[Hashable] = set()
        self._again: dict[Hashable, float] = {}
        self._seq = itertools.count()
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._due) + len(self._again)

    def add(self, key: Hashable, delay: float = 0.0) -> None:
        """Queue ``key`` to run after ``delay`` seconds (the earliest request wins)."""
        due = time.monotonic() + max(delay, 0.0)
        if key in self._busy:
            self._again[key] = min(self._again.get(key, due), due)
            return
        if key in self._due and self._due[key] <= due:
            return
        self._due[key] = due
        heapq.heappush(self._heap, (due, next(self._seq), key))
        self._wake.set()

    def forget(self, key: Hashable) -> None:
        """Drop a queued key (its object was deleted)."""
        self._due.pop(key, None)
        self._again.pop(key, None)

    async def get(self) -> Hashable:
        """The next due key; it is busy until ``done``."""
        while True:
            now = time.monotonic()
            while self._heap:
                due, _, key = self._heap[0]
                if self._due.get(key) != due:  # superseded or forgotten
                    heapq.heappop(self._heap)
                    continue
                if due > now:
                    break
                heapq.heappop(self._heap)
                del self._due[key]
                self._busy.add(key)
                return key
            timeout = (self._heap[0][0] - now) if self._heap else None
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def done(self, key: Hashable) -> None:
        """Finish ``key``; re-queue it if it was added meanwhile."""
        self._busy.discard(key)
        again = self._again.pop(key, None)
        if again is not None:
            self.add(key, max(again - time.monotonic(), 0.0))
