"""The work queue (async-only module: pytest-asyncio 1.5 leaks a loop when a
sync test precedes an async one in the same module)."""

from __future__ import annotations

import asyncio

import pytest

from pot.operator import queueing


async def test_work_queue_dedups_delays_and_serialises() -> None:
    q = queueing.WorkQueue()
    q.add("a")
    q.add("a")
    q.add("b", 0.05)
    assert await q.get() == "a"
    q.add("a")  # while busy: runs again after done, never concurrently
    got = await asyncio.wait_for(q.get(), 1)
    assert got == "b"
    q.done("b")
    q.done("a")
    assert await asyncio.wait_for(q.get(), 1) == "a"
    q.done("a")
    q.add("c", 10)
    q.add("c", 0)  # the earliest due time wins
    assert await asyncio.wait_for(q.get(), 1) == "c"
    q.done("c")
    q.add("d", 0)
    q.forget("d")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(q.get(), 0.05)
