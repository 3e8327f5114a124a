"""A request whose operation is over ``messages.MAX_OP_BYTES`` is refused where it enters.

Every peer refuses such a request on the wire (``decode``: OVERSIZED), and with it the whole
PRE-PREPARE holding it. Before, the API took segments up to the segment limit (1 MiB) and the
core ordered them: the primary put one in a batch no backup would accept, and every batch
after it waited for that one until a view change, after which the replica that took it
suspected each new primary alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import yaml
from aiohttp.test_utils import TestClient, TestServer

from pot.trainer import segments
from pot.validator import api, pbft
from pot.validator import app as vapp
from pot.validator import messages as m
from pot.validator.rejections import Rejection
from tests.validator import node_kit
from tests.validator.pbft_kit import Net

ROOT = Path(__file__).resolve().parents[2]
CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"


def test_an_oversized_request_is_refused_at_submit_and_the_set_goes_on() -> None:
    net = Net()
    primary = net.reps[0]
    big = m.Request(client="c", ts=1, op=b"x" * (m.MAX_OP_BYTES + 1))
    net.perform(0, primary.submit(big))
    net.perform(0, primary.submit(m.Request(client="c", ts=2, op=b"small")))
    net.pump()
    assert primary.rejected[Rejection.OVERSIZED] == 1
    assert big.key not in primary.pending
    assert all(ex.get(1) is not None for ex in net.executed), net.executed
    assert all(r.view == 0 for r in net.reps)


def test_the_api_refuses_a_segment_or_task_too_big_to_order(tmp_path: Path) -> None:
    """A self-signed segment (any key will do) of a registered task, 300 KB once ordered:
    400 at once. (Before: ordered, and ``"committed": false`` after the wait, so the trainer
    sent it again and again.) Same for a registration."""
    stack = contextlib.ExitStack()
    node, keys_ = stack.enter_context(node_kit.api_node(tmp_path))
    spec = yaml.safe_load((ROOT / "examples" / "task.yaml").read_text())["spec"]
    spec["resources"]["nodes"] = 1
    task = "default/big"
    ctx = pbft.ExecContext(1, 0, b"\0" * 32)
    reg = vapp.op("register", task=task, uid="u-big", spec=spec)
    assert b'"ok":true' in node.app.execute(m.Request(client="c", ts=1, op=reg), ctx)
    seg = segments.Segment(
        task=task,
        index=0,
        node_rank=0,
        miner=keys_[1].address,
        start_step=0,
        steps=1,
        start_cid=CID,
        end_cid=CID,
        data_spec={"junk": "a" * 300_000},
        hyperparams_hash="0x" + "00" * 32,
        losses=(0.5,),
        world=segments.World(nnodes=1, nproc_per_node=1),
        final=False,
        metrics={},
        store_url="http://127.0.0.1:9",
    )
    body = json.dumps(segments.sign(seg, keys_[1]).record()).encode()
    assert len(body) < segments.MAX_BYTES

    async def go() -> None:
        async with TestClient(TestServer(api.build(node))) as client:
            started = time.monotonic()
            r = await client.post("/v1/segments", data=body)
            assert (r.status, await r.json()) == (400, {"accepted": False, "reason": "MALFORMED"})
            assert time.monotonic() - started < api.COMMIT_WAIT_S
            big = {"id": "default/bigger", "uid": "u-2", "spec": {**spec, "junk": "a" * 300_000}}
            r = await client.post("/v1/tasks", json=big)
            assert r.status == 400 and (await r.json())["field"] == "spec"
        assert not node.core.pending

    try:
        asyncio.run(go())
    finally:
        stack.close()
