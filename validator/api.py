"""The validator HTTP API (docs/protocol.md, "Validator HTTP API"), on aiohttp.

Thin: parse and check what can be checked before ordering (a segment's
signature, a spec's fields), hand the request to the replica, and answer from
the replicated state. Requests are answered once committed, or ``202`` while
still pending; no handler raises on bad input.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from pot import errors, ids, observability
from pot.trainer import segments, tasks
from pot.validator import app as vapp
from pot.validator import messages, specs
from pot.validator.rejections import Rejection

if TYPE_CHECKING:
    from collections.abc import Iterator

    from aiohttp.typedefs import Handler

    from pot.validator.replica import Node

COMMIT_WAIT_S = 2.0
BODY_TIMEOUT_S = 20.0
"""Longest a request body may take to arrive once its headers are in (a segment is at most
1 MiB). aiohttp has no such timeout: a client trickling a body held a connection and a
handler for as long as it liked, and many of them held as many."""
KEEPALIVE_S = 15.0
"""aiohttp's ``keepalive_timeout``: how long a connection may stay open without a complete
request line and headers, first or next (its default is an hour). Bounds slow headers too."""
LINGER_S = 2.0
"""aiohttp's ``lingering_time``: how long the rest of a body is read and dropped after its
handler answered (a timed-out body's 408) before the connection closes (default 10 s)."""


def _json(status: int, body: Any) -> web.Response:
    return web.json_response(body, status=status)


def _field(message: str) -> str:
    head = message.split(":", 1)[0]
    return head if head.startswith("spec") else "spec"


class _Metrics(Collector):
    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        core = self.node.core
        for name, value, doc in (
            ("view", core.view, "Current PBFT view."),
            ("last_executed_seq", core.last_exec, "Highest executed sequence number."),
            ("stable_checkpoint_seq", core.h, "Low watermark: the last stable checkpoint."),
            ("pending_requests", len(core.pending), "Requests known but not executed."),
            ("ready", int(self.node.ready()[0]), "1 inside a view with a live primary."),
            ("primary", int(core.is_primary), "1 if this replica is the primary."),
        ):
            g = GaugeMetricFamily(f"pot_validator_{name}", doc)
            g.add_metric([], value)
            yield g
        c = CounterMetricFamily(
            "pot_validator_rejected", "Messages refused, by reason.", labels=["reason"]
        )
        for reason, count in sorted(core.rejected.items(), key=lambda kv: kv[0].name):
            c.add_metric([reason.name], count)
        yield c
        s = CounterMetricFamily("pot_validator_events", "Protocol events.", labels=["event"])
        for ev, count in sorted(core.stats.items()):
            s.add_metric([ev], count)
        yield s


def build(node: Node) -> web.Application:
    body_timeout_s = BODY_TIMEOUT_S

    @web.middleware
    async def read_body(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Read the whole body here, against the clock; handlers then get it from aiohttp's
        # cache (``request.read``). Too slow: 408, and the connection closes.
        if request.body_exists:
            try:
                async with asyncio.timeout(body_timeout_s):
                    await request.read()
            except TimeoutError:
                resp = _json(408, {"error": f"body not received in {body_timeout_s} s"})
                resp.force_close()
                return resp
        return await handler(request)

    application = web.Application(
        client_max_size=segments.MAX_BYTES + 4096, middlewares=[read_body]
    )
    registry = CollectorRegistry()
    registry.register(_Metrics(node))
    observability.add_routes(application, ready=node.ready, registry=registry)

    async def body(request: web.Request) -> Any:
        raw = await request.read()
        if messages.too_deep(raw, 64):  # would overflow the C JSON decoder's stack
            return None
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return None

    async def post_task(request: web.Request) -> web.Response:
        doc = await body(request)
        if not isinstance(doc, dict):
            return _json(400, {"error": "body must be a JSON object", "field": ""})
        task = doc.get("id")
        try:
            ids.split_task_key(str(task))
        except errors.ConfigError as exc:
            return _json(400, {"error": str(exc), "field": "id"})
        try:
            specs.check_spec(doc.get("spec"))
        except errors.ConfigError as exc:
            return _json(400, {"error": str(exc), "field": _field(str(exc))})
        signature, miners, uid = doc.get("signature"), doc.get("miners"), doc.get("uid")
        try:  # required: the run seed every replay of the task derives from mixes it in
            uid = tasks.check_uid(uid)
        except errors.ConfigError as exc:
            return _json(400, {"error": str(exc), "field": "uid"})
        if miners is not None and not (
            isinstance(miners, list) and all(isinstance(a, str) for a in miners)
        ):
            return _json(400, {"error": "miners must be a list of addresses", "field": "miners"})
        refused = {
            "error": f"registration of {task} is not signed by {node.app.v.operator}",
            "field": "signature",
        }
        if not node.app.signed_by_operator(str(task), doc["spec"], miners or [], signature, uid):
            return _json(403, refused)  # refused before ordering; every replica checks again
        reg = {"task": task, "spec": doc["spec"]}
        if miners:
            reg["miners"] = miners
        reg["uid"] = uid
        if signature is not None:
            reg["signature"] = signature
        op = vapp.op("register", **reg)
        if len(op) > messages.MAX_OP_BYTES:  # peers refuse such a request (and its batch)
            return _json(
                400, {"error": f"registration over {messages.MAX_OP_BYTES} bytes", "field": "spec"}
            )
        result = await node.submit(op, COMMIT_WAIT_S)
        if result is None:
            return _json(202, {"id": task, "status": "pending"})
        if not result.get("ok"):
            if result.get("reason") == Rejection.NOT_OPERATOR.name:
                return _json(403, refused)
            if result.get("detail"):
                return _json(409, {"error": f"task {task}: {result['detail']}", "field": "id"})
            return _json(
                400, {"error": f"task {task} exists with a different spec", "field": "spec"}
            )
        return _json(202, {"id": task, "status": "registered"})

    async def get_task(request: web.Request) -> web.Response:
        task = ids.task_key(request.match_info["ns"], request.match_info["name"])
        view = node.app.view(task)
        return _json(404, {"error": f"unknown task {task}"}) if view is None else _json(200, view)

    async def post_segment(request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            if messages.too_deep(raw, 64):
                raise segments.Rejected(segments.Rejection.MALFORMED, "nested too deeply")
            seg = segments.parse(raw)
            segments.check_signature(seg)  # before ordering: forged segments never reach PBFT
            op = vapp.op("segment", segment=seg.record())
            if len(op) > messages.MAX_OP_BYTES:  # peers refuse such a request (and its batch)
                raise segments.Rejected(
                    segments.Rejection.MALFORMED, f"over {messages.MAX_OP_BYTES} bytes ordered"
                )
        except segments.Rejected as exc:
            node.count_segment_rejection(exc.reason.name)
            return _json(400, {"accepted": False, "reason": exc.reason.name})
        if seg.task not in node.app.tasks:
            # 503, not 400: registration is ordered, and this replica may execute it after a
            # trainer (started once another replica committed it) sends its first segment; a
            # 400 would make the trainer set the segment aside for good.
            return _json(503, {"accepted": False, "reason": segments.Rejection.WRONG_TASK.name})
        digest = segments.digest(seg)
        known = node.app.tasks[seg.task]["segments"].get(f"{seg.miner.lower()}/{seg.index}")
        if known is not None and known["digest"] == digest:  # idempotent: ordered once
            return _json(202, {"accepted": True, "digest": digest, "committed": True})
        if digest in node.inflight_segments:
            return _json(202, {"accepted": True, "digest": digest, "committed": False})
        node.inflight_segments.add(digest)
        try:
            result = await node.submit(op, COMMIT_WAIT_S)
        finally:
            node.inflight_segments.discard(digest)
        if result is not None and not result.get("ok"):
            return _json(400, {"accepted": False, "reason": result.get("reason", "MALFORMED")})
        # "committed": false tells the trainer to send it again later (idempotent): a request
        # this replica could not get ordered (cut off, changing views) would otherwise be
        # lost, since the trainer drops acknowledged segments from its outbox.
        return _json(202, {"accepted": True, "digest": digest, "committed": result is not None})

    async def get_allocation(request: web.Request) -> web.Response:
        task = ids.task_key(request.match_info["ns"], request.match_info["name"])
        if request.match_info["round"] != "0":
            return _json(404, {"error": "only round 0 exists"})
        doc = node.app.allocation_json(task)
        return (
            _json(404, {"error": f"no allocation for {task}"}) if doc is None else _json(200, doc)
        )

    async def list_allocations(_: web.Request) -> web.Response:
        # The settlement sidecars poll this to learn what to settle (docs/protocol.md). Only
        # whether each task has one: building its JSON (an EIP-712 digest, ~0.5 ms) per task
        # per poll blocked the event loop for a quarter second at 500 finished tasks.
        committed = [
            {"task": task, "round": 0}
            for task, t in sorted(node.app.tasks.items())
            if t["allocation"] is not None
        ]
        return _json(200, {"allocations": committed})

    async def status(_: web.Request) -> web.Response:
        return _json(200, node.status())

    application.router.add_post("/v1/tasks", post_task)
    application.router.add_get("/v1/tasks/{ns}/{name}", get_task)
    application.router.add_post("/v1/segments", post_segment)
    application.router.add_get("/v1/allocations", list_allocations)
    application.router.add_get("/v1/allocations/{ns}/{name}/{round}", get_allocation)
    application.router.add_get("/v1/status", status)
    return application


async def serve(node: Node, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(
        build(node), access_log=None, keepalive_timeout=KEEPALIVE_S, lingering_time=LINGER_S
    )
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    await asyncio.sleep(0)
    return runner
