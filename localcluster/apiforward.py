"""Let pods reach the API server: a TCP relay on the pod network's gateway.

The API server listens on 127.0.0.1 of the host, which a pod's network
namespace cannot see. The kubelet relays ``GATEWAY:PORT`` (the bridge
address, reachable from every pod) to it, and gives each pod a kubeconfig
for that address under ``/var/run/secrets/kubernetes.io/serviceaccount/``
with ``KUBECONFIG`` pointing at it, next to the usual ``namespace`` file.
There is no ``token`` file and no ``ca.crt``, and ``KUBERNETES_SERVICE_HOST``
is left unset, on purpose: in-cluster clients (kubernetes, kopf) would then
insist on HTTPS at the service address; without them they fall back to
``KUBECONFIG``. The pod's ServiceAccount token is in that kubeconfig
instead. When the API server speaks HTTPS (RBAC mode), the relay
terminates TLS with a certificate for the gateway address from the cluster CA
(:mod:`pki`) and opens its own TLS connection upstream, verifying the server;
the kubeconfig then names ``https://GATEWAY:PORT`` and carries the CA.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
from pathlib import Path
from urllib.parse import urlsplit

MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            writer.close()


def relay_tls(cluster_dir: Path, gateway: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(what the relay serves pods with, what it checks the API server with)."""
    from pot.localcluster import pki

    crt, key = pki.issue(cluster_dir, f"relay-{gateway}", ips=[gateway], dns=[])
    return pki.server_context(crt, key), pki.client_context(cluster_dir)


async def start(
    listen_host: str,
    server_url: str,
    tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None,
) -> tuple[asyncio.Server, int]:
    """Relay ``listen_host:<API port>`` to the API server; returns (server, port)."""
    parts = urlsplit(server_url)
    target_host = parts.hostname or "127.0.0.1"
    target_port = parts.port or (443 if parts.scheme == "https" else 80)
    serve_ctx, upstream_ctx = tls if tls is not None else (None, None)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(
                target_host, target_port, ssl=upstream_ctx
            )
        except (OSError, ssl.SSLError):
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(handle, listen_host, target_port, ssl=serve_ctx)
    return server, target_port


def write_credentials(
    directory: Path,
    *,
    namespace: str,
    server: str,
    token: str | None = None,
    ca: bytes | None = None,
) -> None:
    """The files mounted at ``MOUNT`` in every pod; ``token`` (the pod's ServiceAccount's,
    when the API server enforces RBAC) goes into the kubeconfig, never into a ``token`` file."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "namespace").write_text(namespace)
    # No ``token`` or ``ca.crt`` files: clients that find a token file assume in-cluster
    # config (kopf's service-account login does, with the empty CA an earlier version
    # wrote here, and failed); without one they use KUBECONFIG, which carries both.
    cluster: dict[str, str] = {"server": server}
    if ca is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "pot-local", "cluster": cluster}],
        "users": [{"name": "pod", "user": {"token": token} if token else {}}],
        "contexts": [
            {
                "name": "pot-local",
                "context": {"cluster": "pot-local", "user": "pod", "namespace": namespace},
            }
        ],
        "current-context": "pot-local",
    }
    path = directory / "kubeconfig"
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
