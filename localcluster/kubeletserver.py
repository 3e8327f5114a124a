"""The kubelet's own HTTP endpoint: container logs and exec, as a real kubelet serves.

The API server proxies ``pods/log`` to ``GET /containerLogs/{ns}/{pod}/{container}``
and ``pods/exec`` to ``/exec/{ns}/{pod}/{container}`` (a WebSocket speaking
Kubernetes' channel protocol, v5/v4: one byte of stream id per message,
0 stdin, 1 stdout, 2 stderr, 3 the final Status, 4 resize, 255 close), found
through the Node's ``status.daemonEndpoints.kubeletEndpoint.Port``. It listens
on 127.0.0.1 only.

``exec`` runs the command with ``nsenter`` in the container's mount and
network namespaces, with the container's environment: the pod's view.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

if TYPE_CHECKING:
    from pot.localcluster.kubelet import Kubelet
    from pot.localcluster.kubelet_pods import Container, PodWorker

log = logging.getLogger(__name__)

PROTOCOLS = (
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
)


class Server:
    """aiohttp app serving logs and exec for one kubelet."""

    def __init__(self, kubelet: Kubelet) -> None:
        self.kubelet = kubelet
        self.app = web.Application()
        self.app.router.add_get("/containerLogs/{ns}/{pod}/{container}", self.logs)
        self.app.router.add_route("*", "/exec/{ns}/{pod}/{container}", self.exec_)
        self.app.router.add_get("/healthz", self.healthz)
        self.runner: web.AppRunner | None = None

    async def start(self) -> int:
        """Listen on an ephemeral port of 127.0.0.1; returns it."""
        self.runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=1
        )
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop serving."""
        if self.runner is not None:
            await self.runner.cleanup()

    async def healthz(self, _: web.Request) -> web.Response:
        """Liveness of the kubelet."""
        return web.Response(text="ok")

    def _find(self, request: web.Request) -> tuple[PodWorker, Container]:
        ns, pod, name = (request.match_info[k] for k in ("ns", "pod", "container"))
        worker = next(
            (
                w
                for w in self.kubelet.workers.values()
                if w.pod["metadata"]["namespace"] == ns and w.pod["metadata"]["name"] == pod
            ),
            None,
        )
        if worker is None:
            raise web.HTTPNotFound(
                text=f'pod "{pod}" in namespace "{ns}" is not running on this kubelet'
            )
        container = worker.containers.get(name)
        if container is None:
            raise web.HTTPBadRequest(text=f"container {name} is not valid for pod {pod}")
        return worker, container

    async def logs(self, request: web.Request) -> web.StreamResponse:
        """``kubectl logs`` (``follow``, ``previous``, ``tailLines``, ``limitBytes``)."""
        worker, container = self._find(request)
        q = request.query
        instance = container.status.restart_count
        if q.get("previous") in {"true", "1"}:
            instance -= 1
            if instance < 0:
                raise web.HTTPBadRequest(
                    text=f'previous terminated container "{container.status.name}" in pod '
                    f'"{worker.pod["metadata"]["name"]}" not found'
                )
        path = worker.dir / "logs" / container.status.name / f"{instance}.log"
        if not path.exists():
            if "waiting" in container.status.state:
                reason = container.status.state["waiting"].get("reason", "ContainerCreating")
                raise web.HTTPBadRequest(
                    text=f'container "{container.status.name}" in pod "{worker.pod["metadata"]["name"]}" '
                    f"is waiting to start: {reason}"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        data = path.read_bytes()
        if q.get("tailLines"):
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-int(q["tailLines"]) :]) if int(q["tailLines"]) else b""
        if q.get("limitBytes"):
            data = data[: int(q["limitBytes"])]
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        await resp.write(data)
        if q.get("follow") in {"true", "1"}:
            await self._follow(resp, path, container, instance)
        await resp.write_eof()
        return resp

    async def _follow(
        self, resp: web.StreamResponse, path: Path, container: Container, instance: int
    ) -> None:
        offset = path.stat().st_size
        with path.open("rb") as fh:
            fh.seek(offset)
            while True:
                chunk = fh.read(65536)
                if chunk:
                    await resp.write(chunk)
                    continue
                alive = container.running is not None and container.status.restart_count == instance
                if not alive:
                    # The instance ended: drain what is left and stop, as kubectl logs -f does.
                    rest = fh.read()
                    if rest:
                        await resp.write(rest)
                    return
                await asyncio.sleep(0.2)

    async def exec_(self, request: web.Request) -> web.StreamResponse:
        """``kubectl exec`` over the WebSocket channel protocol."""
        worker, container = self._find(request)
        command = request.query.getall("command", [])
        if not command:
            raise web.HTTPBadRequest(text="you must specify at least 1 command")
        argv = worker.exec_argv(container, command)
        if argv is None:
            raise web.HTTPBadRequest(
                text=f'unable to upgrade connection: container not found ("{container.status.name}")'
            )
        ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=0)
        await ws.prepare(request)
        use_stdin = request.query.get("stdin") in {"true", "1"}
        env = dict(container.process_spec.env) if container.process_spec else None
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if use_stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
        except OSError as exc:
            await ws.send_bytes(b"\x03" + json.dumps(_failure(str(exc), 126)).encode())
            await ws.close()
            return ws

        async def pump(stream: asyncio.StreamReader | None, channel: int) -> None:
            if stream is None:
                return
            while chunk := await stream.read(65536):
                await ws.send_bytes(bytes([channel]) + chunk)

        async def feed() -> None:
            async for msg in ws:
                if msg.type != WSMsgType.BINARY or not msg.data:
                    continue
                channel, payload = msg.data[0], msg.data[1:]
                if channel == 0 and proc.stdin is not None:
                    proc.stdin.write(payload)
                    with contextlib.suppress(ConnectionError):
                        await proc.stdin.drain()
                elif channel == 255 and payload[:1] == b"\x00" and proc.stdin is not None:
                    proc.stdin.close()

        feeder = asyncio.create_task(feed())
        await asyncio.gather(pump(proc.stdout, 1), pump(proc.stderr, 2))
        code = await proc.wait()
        feeder.cancel()
        status = (
            {"metadata": {}, "status": "Success"}
            if code == 0
            else _failure(f"command terminated with non-zero exit code: exit status {code}", code)
        )
        with contextlib.suppress(ConnectionError):
            await ws.send_bytes(b"\x03" + json.dumps(status).encode())
            await ws.close()
        return ws


def _failure(message: str, code: int) -> dict[str, Any]:
    return {
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }
