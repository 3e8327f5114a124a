"""/metrics and probe endpoints every pot component serves (DESIGN §7).

Metric names are prefixed ``pot_<component>_``. Probes: ``/healthz`` (the
process is alive and its loop turns) and ``/readyz`` (the component says it can
do its job, e.g. a validator inside a view with a live primary).
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest


def add_routes(
    app: web.Application,
    *,
    ready: Callable[[], tuple[bool, str]] | None = None,
    registry: CollectorRegistry = REGISTRY,
) -> None:
    """Mount /metrics, /healthz and /readyz on ``app``.

    ``ready`` returns (is_ready, reason); without it the component is ready
    whenever it is alive.
    """

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        ok, reason = ready() if ready else (True, "ready")
        return web.Response(text=reason + "\n", status=200 if ok else 503)

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
