"""A whole pot deployment on one cluster, driven the way a farm operator drives it.

``pot demo`` and the end-to-end tests share this harness so that the demo is
exactly what the tests check. Everything goes through the same doors a user
uses: the real ``helm`` binary installs the chart, the real ``kubectl``
applies the examples, contracts are deployed with ``pot.settlement`` over
JSON-RPC, and progress is read back from the custom resources' status.

The cluster may be the embedded local cluster (the default, no Docker) or any
cluster a kubeconfig points at (kind in ``tests/e2e``); the chain is a dev
chain (anvil when installed, else the in-process EVM) bound to an address the
cluster's pods can reach.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pot import errors, ids, keys

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
CHART = ROOT / "charts" / "pot-operator"
TERMINAL = {"Succeeded", "Failed"}


def tool(name: str) -> str:
    """Path of a project tool: kubectl from the venv, helm from .tools/bin."""
    for candidate in (ROOT / ".venv" / "bin" / name, ROOT / ".tools" / "bin" / name):
        if candidate.exists():
            return str(candidate)
    raise errors.ConfigError(f"{name} not found: run `make install`")


def run_tool(
    argv: list[str], *, kubeconfig: Path, stdin: str | None = None, timeout: float = 120
) -> str:
    """Run kubectl/helm against ``kubeconfig``; ClusterError with its stderr on failure."""
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    try:
        out = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, env=env, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise errors.ClusterError(f"{' '.join(argv[:3])} timed out after {timeout:.0f}s") from exc
    if out.returncode != 0:
        raise errors.ClusterError(f"{' '.join(argv[:3])}: {out.stderr.strip() or out.returncode}")
    return out.stdout


def load_examples(name: str) -> list[dict[str, Any]]:
    """The YAML documents of ``examples/NAME``."""
    return [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]


def dev_secret_keys(secret_name: str) -> dict[str, keys.Key]:
    """Keys of a dev Secret in examples/dev-keys.yaml (item name -> key), read from the file."""
    for doc in load_examples("dev-keys.yaml"):
        if doc["kind"] == "Secret" and doc["metadata"]["name"] == secret_name:
            out = {}
            for item, value in doc["stringData"].items():
                out[item] = keys.from_text(value, f"examples/dev-keys.yaml {secret_name}/{item}")
            return out
    raise errors.ConfigError(f"examples/dev-keys.yaml has no Secret {secret_name}")


@dataclass(kw_only=True)
class Stack:
    """Handles on one running deployment."""

    kubeconfig: Path
    rpc_url: str
    """The chain's JSON-RPC URL as pods see it."""
    chain_id: int
    contract: str
    namespace: str = "default"
    say: Callable[[str], None] = print
    marks: dict[str, float] = field(default_factory=dict)

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
        """Real kubectl against this cluster."""
        return run_tool(
            [tool("kubectl"), *args], kubeconfig=self.kubeconfig, stdin=stdin, timeout=timeout
        )

    def helm(self, *args: str, timeout: float = 300) -> str:
        """Real helm against this cluster."""
        return run_tool([tool("helm"), *args], kubeconfig=self.kubeconfig, timeout=timeout)

    def apply(self, docs: list[dict[str, Any]]) -> str:
        """``kubectl apply -f -`` the documents in this namespace."""
        text = yaml.safe_dump_all(docs, sort_keys=False)
        return self.kubectl("apply", "-n", self.namespace, "-f", "-", stdin=text)

    def install_operator(self, *, extra_values: dict[str, str] | None = None) -> None:
        """``helm upgrade --install`` the chart, as a farm does."""
        args = [
            "upgrade",
            "--install",
            "pot",
            str(CHART),
            "--namespace",
            "pot-system",
            "--create-namespace",
            "--set",
            f"chain.rpcUrl={self.rpc_url}",
            "--set",
            "networkPolicies.enabled=false",
        ]
        for key, value in (extra_values or {}).items():
            args += ["--set", f"{key}={value}"]
        self.helm(*args)

    def validatorset_doc(self) -> dict[str, Any]:
        """examples/validatorset.yaml pointed at this stack's chain and contract."""
        (doc,) = load_examples("validatorset.yaml")
        doc["spec"]["chain"].update(
            rpcUrl=self.rpc_url, chainId=self.chain_id, contract=self.contract
        )
        return doc

    def get(self, kind: str, name: str) -> dict[str, Any]:
        """One object as JSON."""
        doc: dict[str, Any] = json.loads(
            self.kubectl("get", kind, name, "-n", self.namespace, "-o", "json")
        )
        return doc

    def wait_for(
        self,
        what: str,
        check: Callable[[], bool],
        *,
        timeout: float,
        interval: float = 1.0,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        """Poll ``check`` until true; ClusterError naming ``what`` on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if on_tick is not None:
                on_tick()
            if check():
                return
            if time.monotonic() > deadline:
                raise errors.ClusterError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(interval)


def task_chain_id(namespace: str, name: str) -> str:
    """The bytes32 the contract knows the task by, as 0x-hex."""
    return "0x" + ids.chain_task_id(ids.task_key(namespace, name)).hex()
