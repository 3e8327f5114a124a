"""``Node.submit`` forgets its waiting entry however the wait ends.

The HTTP API orders each registration and segment through ``Node.submit``, which waits for
the request to execute. Before, its entry in ``Node.waiters`` went only when the request
executed: a request the core refused at submit (over the op limit, admission full, forged),
one that never executed, and a handler cancelled mid-wait each left an entry (and a future)
behind for good, one per HTTP request.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from pot.validator import auditing, auth, localnet, replica
from pot.validator import messages as m
from pot.validator.rejections import Rejection


def _node(tmp_path: Path) -> replica.Node:
    config, keys_ = localnet.write_peers(tmp_path, 4)
    # Replica 1, a backup with no peers connected: what it submits never executes.
    return replica.Node(
        peers=auth.load_peers(config),
        me=1,
        key=keys_[1],
        data_dir=tmp_path / "data-1",
        auditor=auditing.Scripted(),
    )


def test_refused_timed_out_and_cancelled_submits_leave_no_waiter(tmp_path: Path) -> None:
    node = _node(tmp_path)

    async def go() -> None:
        big = b"x" * (m.MAX_OP_BYTES + 1)
        for _ in range(50):
            assert await node.submit(big, 0.001) is None  # refused by the core at submit
            assert await node.submit(b'{"op":"noop"}', 0.001) is None  # never executes
        assert node.core.rejected[Rejection.OVERSIZED] == 50
        assert len(node.core.pending) == 50
        assert node.waiters == {}
        tasks = [asyncio.create_task(node.submit(b'{"op":"noop"}', 60)) for _ in range(20)]
        await asyncio.sleep(0.01)
        assert len(node.waiters) == 20  # waiting, as a handler does
        for t in tasks:
            t.cancel()  # e.g. the HTTP client went away
        await asyncio.gather(*tasks, return_exceptions=True)
        assert node.waiters == {}

    try:
        asyncio.run(go())
    finally:
        node.sync_pool.shutdown()
        node.disk.close()
