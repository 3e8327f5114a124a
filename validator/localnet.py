"""A validator set of real ``python -m pot.validator`` processes on 127.0.0.1.

Used by the loopback tests and ``bench/pbft.py`` (hivemind's habit: test
distributed behaviour with real processes on loopback). Each replica gets a
fresh key, its own ports and data directory; ``peers.json`` is written the way
the operator writes it (docs/protocol.md).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pot import keys
from pot.validator import auth


def free_ports(count: int) -> list[int]:
    socks, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def write_peers(
    root: Path, n: int, *, tuning: dict[str, int] | None = None, operator: str | None = None
) -> tuple[Path, list[keys.Key]]:
    """peers.json and key files for n replicas under ``root`` (``operator``: the address
    whose registrations alone are accepted)."""
    root.mkdir(parents=True, exist_ok=True)
    ks = [keys.generate() for _ in range(n)]
    ports = free_ports(2 * n)
    replicas = []
    for i, k in enumerate(ks):
        (root / f"validator-{i}.key").write_text(k.secret.hex())
        replicas.append(
            {
                "id": i,
                "host": "127.0.0.1",
                "pbftPort": ports[2 * i],
                "httpPort": ports[2 * i + 1],
                "address": k.address,
                "publicKey": "0x" + auth.public_key_of(k).hex(),
            }
        )
    doc = {
        "n": n,
        "f": (n - 1) // 3,
        "replicas": replicas,
        "chain": {"rpcUrl": "http://127.0.0.1:8545", "chainId": 31337, "contract": "0x" + "5" * 40},
        "pbft": tuning or {"checkpointInterval": 16, "batchSize": 100, "viewChangeTimeoutMs": 1000},
    }
    if operator is not None:
        doc["operator"] = operator
    path = root / "peers.json"
    path.write_text(json.dumps(doc, indent=1))
    return path, ks


class LocalNet:
    """n validator processes; start, kill, restart, query."""

    def __init__(
        self,
        root: Path,
        n: int,
        *,
        auditor: str = "accept",
        tuning: dict[str, int] | None = None,
        operator: str | None = None,
    ) -> None:
        self.root = root
        self.n = n
        self.auditor = auditor
        self.config, self.keys = write_peers(root, n, tuning=tuning, operator=operator)
        self.doc = json.loads(self.config.read_text())
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.logs: list[Any] = []

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.doc['replicas'][i]['httpPort']}"

    def start(self, i: int | None = None, extra: tuple[str, ...] = ()) -> None:
        for r in range(self.n) if i is None else [i]:
            log = (self.root / f"replica-{r}.log").open("ab")
            self.logs.append(log)
            self.procs[r] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pot.validator",
                    "--config",
                    str(self.config),
                    "--replica-id",
                    str(r),
                    "--key-file",
                    str(self.root / f"validator-{r}.key"),
                    "--data-dir",
                    str(self.root / f"data-{r}"),
                    "--bind",
                    "127.0.0.1",
                    "--auditor",
                    self.auditor,
                    "--log-level",
                    "WARNING",
                    *extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def kill(self, i: int) -> None:
        p = self.procs.pop(i, None)
        if p is not None:
            p.kill()
            p.wait()

    def close(self) -> None:
        procs = list(self.procs.values())
        self.procs.clear()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for log in self.logs:
            log.close()

    def get(self, i: int, path: str, timeout: float = 2.0, *, raw: bool = False) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url(i) + path, timeout=timeout) as resp:  # noqa: S310
                data = resp.read()
                return resp.status, data.decode() if raw else json.loads(data or b"null")
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                return exc.code, json.loads(body)
            except ValueError:
                return exc.code, body.decode(errors="replace")
        except (urllib.error.URLError, OSError, ValueError):
            return 0, None

    def post(self, i: int, path: str, body: Any, timeout: float = 5.0) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(  # noqa: S310
            self.url(i) + path,
            data=data,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")
        except (urllib.error.URLError, OSError, ValueError):
            return 0, None

    def wait_ready(self, replicas: list[int] | None = None, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        todo = set(range(self.n) if replicas is None else replicas)
        while todo and time.monotonic() < deadline:
            for i in list(todo):
                code, _ = self.get(i, "/v1/status", timeout=0.5)
                if code == 200:
                    todo.discard(i)
            time.sleep(0.1)
        if todo:
            raise TimeoutError(f"replicas {sorted(todo)} did not come up")

    def wait(self, cond: Any, timeout: float = 30.0, every: float = 0.1) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = cond()
            if got:
                return got
            time.sleep(every)
        raise TimeoutError("condition not met")
