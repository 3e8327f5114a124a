"""``pot local up|down|status``: start, stop and inspect the local cluster's processes.

A local cluster is a state directory (default ``~/.pot/local``) and a few
processes started in the background, each in its own session so a terminal's
Ctrl-C does not reach them:

* ``DIR/state/``      the API server's durable object log (:mod:`storage`);
* ``DIR/kubeconfig``  written once the API server serves (``server:
  http://127.0.0.1:PORT``, no credentials; with ``--authorization-mode RBAC``
  ``https://``, the cluster CA from ``DIR/pki/`` and the admin token, see
  :mod:`authorizing` and :mod:`pki`);
* ``DIR/pids.json``   name -> pid of every process started, for ``down``;
* ``DIR/logs/NAME.log`` each process's output.

The API server starts first (it picks a free port, preferring the one it
had last time so old kubeconfigs stay valid, and writes it to
``DIR/apiserver.port``); every other component starts after it serves and is
given ``--kubeconfig DIR/kubeconfig``: components talk to the cluster only
through the Kubernetes API, as real ones do.

Adding a component (controller manager, kubelet, ...): append a
:class:`Component` to :data:`COMPONENTS` naming its module (run as
``python -m MODULE --kubeconfig DIR/kubeconfig [extra args]``; ``extra``
receives the state directory, e.g. to give a kubelet a work folder under it).
The module must run until SIGTERM and exit promptly on it. ``down`` stops
components in reverse order, so the API server goes last.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pot import errors, files

DEFAULT_DIR = Path("~/.pot/local").expanduser()


@dataclass(frozen=True, slots=True)
class Component:
    """A process of the local cluster, started after the API server serves."""

    name: str
    module: str
    """Run as ``python -m MODULE --kubeconfig DIR/kubeconfig *extra(DIR)``."""
    extra: Callable[[Path], list[str]] = field(default=lambda _d: [])
    cleanup: Callable[[Path], None] | None = None
    """Called by ``down`` after the process is gone (removes what a killed one left)."""


def _controlplane_cleanup(directory: Path) -> None:
    from pot.localcluster import controlplane

    controlplane.cleanup(directory)


COMPONENTS: list[Component] = [
    # Issue 4: scheduler, controllers and the process kubelet, in one process.
    Component(
        "controlplane",
        "pot.localcluster.controlplane",
        extra=lambda d: ["--dir", str(d)],
        cleanup=_controlplane_cleanup,
    ),
]
"""Components after the API server, in start order."""


@dataclass(frozen=True, slots=True)
class Status:
    directory: Path
    running: dict[str, int]
    """name -> pid of the processes alive."""
    stopped: list[str]
    """Names recorded in pids.json whose process is gone."""
    url: str | None
    serving: bool

    @property
    def up(self) -> bool:
        return self.serving and "apiserver" in self.running


def kubeconfig_text(url: str, *, token: str | None = None, ca: bytes | None = None) -> str:
    """A kubeconfig for ``url``, context ``pot-local``: no credentials, or the bearer
    ``token`` and the CA certificate (PEM) that signed the server's."""
    cluster: dict[str, Any] = {"server": url}
    if ca is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "pot-local", "cluster": cluster}],
        "users": [{"name": "pot-local", "user": {"token": token} if token else {}}],
        "contexts": [
            {
                "name": "pot-local",
                "context": {"cluster": "pot-local", "user": "pot-local", "namespace": "default"},
            }
        ],
        "current-context": "pot-local",
        "preferences": {},
    }
    return json.dumps(doc, indent=2) + "\n"


def _alive(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    # A recycled pid runs something else: only count our own processes.
    return b"pot.localcluster" in cmdline or b"pot/localcluster" in cmdline


def _pids(directory: Path) -> dict[str, int]:
    try:
        data = json.loads((directory / "pids.json").read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): int(v) for k, v in data.items()}


def _write_pids(directory: Path, pids: dict[str, int]) -> None:
    tmp = directory / "pids.json.tmp"
    tmp.write_text(json.dumps(pids, indent=2) + "\n")
    tmp.replace(directory / "pids.json")


def _url(directory: Path) -> str | None:
    try:
        port = int((directory / "apiserver.port").read_text())
    except (OSError, ValueError):
        return None
    try:
        scheme = (directory / "apiserver.scheme").read_text().strip()
    except OSError:
        scheme = "http"
    return f"{scheme}://127.0.0.1:{port}"


def serving(url: str, timeout: float = 1.0, directory: Path | None = None) -> bool:
    """Whether the API server at ``url`` answers /readyz (over HTTPS, trusting only the
    cluster CA under ``directory``)."""
    ctx = None
    if url.startswith("https") and directory is not None:
        from pot.localcluster import pki

        try:
            ctx = pki.client_context(directory)
        except OSError:
            return False
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=timeout, context=ctx) as resp:  # noqa: S310 (our own 127.0.0.1 URL)
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def status(directory: Path = DEFAULT_DIR) -> Status:
    _reap()
    pids = _pids(directory)
    running = {n: p for n, p in pids.items() if _alive(p)}
    url = _url(directory)
    return Status(
        directory,
        running,
        [n for n in pids if n not in running],
        url,
        bool(url and serving(url, directory=directory)),
    )


_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
"""Processes started by this very process (tests): kept so ``down`` can reap them."""


def _spawn(directory: Path, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
    logs = directory / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=directory,
        )
    _CHILDREN[proc.pid] = proc
    return proc


def up(
    directory: Path = DEFAULT_DIR,
    *,
    timeout: float = 60.0,
    components: list[Component] | None = None,
    authorization: str = "AlwaysAllow",
) -> tuple[Path, bool]:
    """Start the cluster; returns (kubeconfig path, whether it was already up).
    ``authorization="RBAC"``: pods' requests must pass RBAC (see :mod:`authorizing`)."""
    if authorization not in ("AlwaysAllow", "RBAC"):
        raise errors.ConfigError(
            f"--authorization-mode: {authorization!r} is not one of AlwaysAllow, RBAC"
        )
    directory = directory.expanduser().resolve()
    directory.mkdir(parents=True, exist_ok=True)
    kubeconfig = directory / "kubeconfig"
    current = status(directory)
    if current.up:
        # Issue 4: a component that died (a crashed kubelet) is started again;
        # on start it adopts or cleans up what its predecessor left.
        wanted = COMPONENTS if components is None else components
        missing = [c for c in wanted if c.name not in current.running]
        if missing:
            _start_components(directory, kubeconfig, _pids(directory), missing)
        return kubeconfig, True
    port_file = directory / "apiserver.port"
    previous = _url(directory)
    wanted = COMPONENTS if components is None else components
    keep: dict[str, int] = {}
    if current.running and "apiserver" not in current.running and previous:
        # Only the API server died: start it again on its port and leave the control plane
        # (and so every pod) running, as a real kubelet outlives an API server restart; its
        # informers relist, and its status writes that failed meanwhile are made again.
        keep = {name: pid for name, pid in current.running.items() if name != "apiserver"}
    elif current.running:
        down(directory)
    argv = [
        sys.executable,
        "-m",
        "pot.localcluster.apiserver",
        "--dir",
        str(directory / "state"),
        "--port-file",
        str(port_file),
        "--authorization-mode",
        authorization,
    ]
    token = ca = None
    if authorization == "RBAC":
        # Tokens go only over TLS (client-go's rule): serve HTTPS under the cluster CA.
        from pot.localcluster import authorizing, pki

        crt, key = pki.issue(directory, "apiserver", ips=["127.0.0.1"], dns=["localhost"])
        argv += ["--tls-cert", str(crt), "--tls-key", str(key)]
        ca = pki.ca_pem(directory)
        token = authorizing.Tokens(files.secret_key(directory / "state" / "auth.key")).admin()
    (directory / "apiserver.scheme").write_text("https" if authorization == "RBAC" else "http")
    if previous:
        argv += ["--port", previous.rsplit(":", 1)[1]]
    with contextlib.suppress(FileNotFoundError):
        port_file.unlink()
    pids: dict[str, int] = {}
    proc = _spawn(directory, "apiserver", argv)
    pids["apiserver"] = proc.pid
    pids.update(keep)  # after the API server: `down` stops them first
    _write_pids(directory, pids)
    deadline = time.monotonic() + timeout
    url = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise errors.ClusterError(
                f"the API server exited with code {proc.returncode}; see {directory / 'logs' / 'apiserver.log'}"
            )
        url = _url(directory)
        if url and serving(url, directory=directory):
            break
        time.sleep(0.05)
    else:
        down(directory)
        raise errors.ClusterError(
            f"the API server did not serve within {timeout:.0f}s; see {directory / 'logs'}"
        )
    assert url is not None
    tmp = directory / "kubeconfig.tmp"
    tmp.write_text(kubeconfig_text(url, token=token, ca=ca))
    tmp.chmod(0o600)
    tmp.replace(kubeconfig)
    _start_components(directory, kubeconfig, pids, [c for c in wanted if c.name not in keep])
    return kubeconfig, False


def _start_components(
    directory: Path, kubeconfig: Path, pids: dict[str, int], components: list[Component]
) -> None:
    for comp in components:
        cargv = [
            sys.executable,
            "-m",
            comp.module,
            "--kubeconfig",
            str(kubeconfig),
            *comp.extra(directory),  # noqa: S610 (a dataclass field, not Django)
        ]
        pids[comp.name] = _spawn(directory, comp.name, cargv).pid
        _write_pids(directory, pids)


def down(directory: Path = DEFAULT_DIR, *, timeout: float = 15.0) -> list[str]:
    """Stop every process ``up`` started (reverse order); returns the names stopped."""
    directory = directory.expanduser().resolve()
    pids = _pids(directory)
    stopped = []
    for name, pid in reversed(list(pids.items())):
        if not _alive(pid):
            _reap(pid)
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        child = _CHILDREN.pop(pid, None)
        if child is not None:
            # Our own child (tests): wait for its exit status, not just an empty cmdline.
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout)
        stopped.append(name)
    for comp in COMPONENTS:
        if comp.cleanup is not None:
            comp.cleanup(directory)
    with contextlib.suppress(FileNotFoundError):
        (directory / "pids.json").unlink()
    _reap()
    return stopped


def _reap(pid: int | None = None) -> None:
    """Collect exit statuses of children ``up`` started in this very process (tests).

    ``/proc/PID/cmdline`` of an unreaped (zombie) child is empty, so ``_alive``
    already says it is gone; polling here clears it for good.
    """
    for child_pid, proc in list(_CHILDREN.items()):
        if (pid is None or child_pid == pid) and proc.poll() is not None:
            del _CHILDREN[child_pid]
