"""Fixtures for tests that need a Kubernetes API: the local cluster, fresh per module.

* ``local_cluster`` — the whole local cluster as ``pot local up`` starts it
  (API server plus every component in ``launching.COMPONENTS``), as
  background processes in a temporary state directory; stopped at the end of
  the module. Use it for operator and end-to-end tests.
* ``apiserver`` — only the API server, in this process on its own thread
  (starts in ~0.1 s). Use it for tests of the API itself.

Both yield a :class:`Cluster`: ``.kubeconfig`` (a path: pass it to kopf, the
``kubernetes`` client or ``KUBECONFIG``), ``.url``, ``.kubectl(*args)`` and
``.helm(*args)`` (the real binaries, with this cluster's kubeconfig and a
private cache dir) and ``.request(method, path, body)`` for raw HTTP.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pot.localcluster import apiserver, launching, pki

REPO = Path(__file__).resolve().parents[2]
KUBECTL = REPO / ".venv" / "bin" / "kubectl"
HELM = REPO / ".tools" / "bin" / "helm"


@dataclass
class Cluster:
    directory: Path
    kubeconfig: Path
    url: str
    env: dict[str, str] = field(default_factory=dict)
    token: str | None = None
    """Sent by :meth:`request` unless a call passes its own Authorization (RBAC mode)."""

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            KUBECONFIG=str(self.kubeconfig),
            KUBECACHEDIR=str(self.directory / "kube-cache"),
            HELM_CACHE_HOME=str(self.directory / "helm-cache"),
            HELM_CONFIG_HOME=str(self.directory / "helm-config"),
            HELM_DATA_HOME=str(self.directory / "helm-data"),
        )
        env.update(self.env)
        return env

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this cluster; raises with its stderr on failure when ``check``."""
        proc = subprocess.run(
            [str(KUBECTL), *args],
            check=False,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self._env(),
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}"
            )
        return proc

    def helm(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(HELM), *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self._env(),
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}"
            )
        return proc

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One raw HTTP request; returns (status code, decoded JSON body or text)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        headers = dict(headers or {})
        if self.token and "Authorization" not in headers:
            headers["Authorization"] = f"Bearer {self.token}"
        for k, v in headers.items():
            req.add_header(k, v)
        ctx = pki.client_context(self.directory) if self.url.startswith("https") else None
        try:
            with urllib.request.urlopen(req, timeout=30, context=ctx) as resp:
                code, text = resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            code, text = exc.code, exc.read().decode()
        try:
            return code, json.loads(text)
        except ValueError:
            return code, text


class ThreadedApiServer:
    """An :class:`apiserver.ApiServer` on its own event loop and thread."""

    def __init__(
        self, directory: Path, *, bookmark_interval: float = 1.0, authorization: str = "AlwaysAllow"
    ) -> None:
        self.directory = directory
        self.authorization = authorization
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="apiserver", daemon=True)
        self.server: apiserver.ApiServer | None = None
        self.bookmark_interval = bookmark_interval

    def start(self) -> str:
        self.thread.start()

        async def boot() -> int:
            self.server = apiserver.ApiServer(
                self.directory,
                bookmark_interval=self.bookmark_interval,
                authorization=self.authorization,
            )
            return await self.server.start()

        port = asyncio.run_coroutine_threadsafe(boot(), self.loop).result(30)
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def start_threaded(
    directory: Path, authorization: str = "AlwaysAllow"
) -> tuple[ThreadedApiServer, Cluster]:
    srv = ThreadedApiServer(directory / "state", authorization=authorization)
    url = srv.start()
    kubeconfig = directory / "kubeconfig"
    kubeconfig.write_text(launching.kubeconfig_text(url))
    return srv, Cluster(directory, kubeconfig, url)


@pytest.fixture(scope="module")
def apiserver_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Only the API server, in-process (fast); fresh per test module."""
    srv, cluster = start_threaded(tmp_path_factory.mktemp("apiserver"))
    try:
        yield cluster
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The whole local cluster (``pot local up`` in a temporary dir); fresh per test module."""
    directory = tmp_path_factory.mktemp("local-cluster")
    kubeconfig, _ = launching.up(directory)
    st = launching.status(directory)
    assert st.url is not None
    try:
        yield Cluster(directory, kubeconfig, st.url)
    finally:
        launching.down(directory)
