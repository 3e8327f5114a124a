"""The ``kubernetes`` Service for pods: a TCP relay from the pod network to the API server.

In a real cluster, pods reach the API server at ``kubernetes.default.svc``
(``KUBERNETES_SERVICE_HOST``/``PORT``) with a mounted service-account token.
The local API server listens on 127.0.0.1 only (it has no authentication, so
it must not listen on any interface others can reach), and a pod in its own
network namespace cannot reach the host's loopback. This relay listens on the
pod network's gateway address, which only this machine's pods can reach, and
copies bytes to the API server; pods get a kubeconfig pointing at it
(``KUBECONFIG``), which kopf and the official client both honour when there
is no in-cluster token. That is what lets the operator run *inside* the local
cluster, installed by the Helm chart as on a real one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

PORT = 6443
"""Port of the relay on the gateway address."""


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class Relay:
    """Accepts on ``listen_host:port`` and forwards each connection to ``target``."""

    def __init__(
        self, listen_host: str, target_host: str, target_port: int, *, port: int = PORT
    ) -> None:
        self.listen_host = listen_host
        self.port = port
        self.target = (target_host, target_port)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Bind and serve in the background."""
        self._server = await asyncio.start_server(self._handle, self.listen_host, self.port)
        log.info("API relay %s:%d -> %s:%d", self.listen_host, self.port, *self.target)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError as exc:
            log.warning("API relay: API server unreachable: %s", exc)
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, server_w), _pipe(server_r, client_w))

    async def close(self) -> None:
        """Stop accepting."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://{self.listen_host}:{self.port}"


def write_pod_kubeconfig(path: Path, url: str) -> Path:
    """A kubeconfig for pods (server ``url``, no credentials), written atomically."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "pot-local", "cluster": {"server": url}}],
        "users": [{"name": "pod", "user": {}}],
        "contexts": [{"name": "pot-local", "context": {"cluster": "pot-local", "user": "pod"}}],
        "current-context": "pot-local",
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(doc))
    tmp.replace(path)
    return path
