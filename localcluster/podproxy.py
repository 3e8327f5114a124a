"""``pods/exec`` in the API server: relay kubectl's WebSocket to the pod's kubelet.

kubectl 1.37 runs ``exec`` over a WebSocket (subprotocol
``v5.channel.k8s.io``, falling back to SPDY only when the upgrade is refused
as unsupported). Like the real API server, this one does not run anything: it
finds the pod's node, its kubelet endpoint
(``status.daemonEndpoints.kubeletEndpoint.Port`` at the node's InternalIP,
the same lookup ``pods/log`` uses) and relays frames both ways, unchanged, to
the kubelet's ``/exec/{namespace}/{pod}/{container}``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from pot.localcluster import statuses

PROTOCOLS = (
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
)


def kubelet_url(node: dict[str, Any], node_name: str) -> str:
    """http://ADDRESS:PORT of the kubelet serving ``node``."""
    nstatus = node.get("status") or {}
    port = ((nstatus.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
    addr = next(
        (a.get("address") for a in nstatus.get("addresses") or [] if a.get("type") == "InternalIP"),
        "127.0.0.1",
    )
    if not port:
        raise statuses.ApiError(
            503, "ServiceUnavailable", f"node {node_name} has no kubelet endpoint"
        )
    return f"http://{addr}:{port}"


def pick_container(pod: dict[str, Any], name: str, requested: str | None) -> str:
    """The container to exec into (the only one, or the one asked for)."""
    spec = pod.get("spec") or {}
    names = [
        c.get("name") for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])
    ]
    if requested:
        if requested not in names:
            raise statuses.bad_request(f"container {requested} is not valid for pod {name}")
        return requested
    regular = [c.get("name") for c in spec.get("containers") or []]
    if len(regular) == 1:
        return str(regular[0])
    raise statuses.bad_request(
        f"a container name must be specified for pod {name}, choose one of: [{' '.join(map(str, regular))}]"
    )


async def exec_(
    request: web.Request,
    pod: dict[str, Any],
    node: dict[str, Any] | None,
    namespace: str,
    name: str,
) -> web.StreamResponse:
    """Relay one ``kubectl exec`` session (``pod`` and its ``node`` from the store)."""
    node_name = (pod.get("spec") or {}).get("nodeName")
    if not node_name or node is None:
        raise statuses.bad_request(f"pod {name} does not have a host assigned")
    phase = (pod.get("status") or {}).get("phase")
    if phase in {"Succeeded", "Failed"}:
        raise statuses.bad_request(
            f"cannot exec into a container in a completed pod; current phase is {phase}"
        )
    container = pick_container(pod, name, request.query.get("container"))
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise statuses.ApiError(
            400,
            "BadRequest",
            "exec needs a WebSocket upgrade (v5.channel.k8s.io); SPDY is not served",
        )
    query = [(k, v) for k, v in request.query.items() if k != "container"]
    url = f"{kubelet_url(node, node_name)}/exec/{namespace}/{name}/{container}"
    asked = [
        p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
    ]
    session = aiohttp.ClientSession()
    try:
        try:
            upstream = await session.ws_connect(url, params=query, protocols=asked or PROTOCOLS)
        except aiohttp.WSServerHandshakeError as exc:
            raise statuses.ApiError(
                exc.status or 502, "BadRequest", f"kubelet refused exec: {exc.message}"
            ) from exc
        except aiohttp.ClientError as exc:
            raise statuses.ApiError(
                503, "ServiceUnavailable", f"cannot reach the kubelet of node {node_name}: {exc}"
            ) from exc
        ws = web.WebSocketResponse(
            protocols=[upstream.protocol] if upstream.protocol else PROTOCOLS
        )
        await ws.prepare(request)

        async def down() -> None:
            async for msg in upstream:
                if msg.type == WSMsgType.BINARY:
                    await ws.send_bytes(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    await ws.send_str(msg.data)
                else:
                    break

        async def up() -> None:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    await upstream.send_bytes(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    await upstream.send_str(msg.data)
                else:
                    break

        to_client = asyncio.create_task(down())
        to_kubelet = asyncio.create_task(up())
        await to_client
        to_kubelet.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await to_kubelet
        await upstream.close()
        await ws.close()
        return ws
    finally:
        await session.close()
