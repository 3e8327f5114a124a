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


ETH = 10**18


def deploy_contract(chain: Any, say: Callable[[str], None] = print) -> str:
    """Deploy PotSettlement on a dev chain for the example ValidatorSet; return its address.

    The validators' keys come from examples/dev-keys.yaml (the same file the
    cluster gets as Secrets); each validator gets gas money for its sidecar.
    """
    from pot.settlement import chain as chaining
    from pot.settlement import contracts

    deployer = keys.generate()
    chain.fund(deployer.address, 100 * ETH)
    validators = dev_secret_keys("vset-keys")
    ordered = [validators[f"validator-{i}.key"] for i in range(len(validators))]
    for v in ordered:
        chain.fund(v.address, 10 * ETH)
    address = contracts.deploy_settlement(
        chaining.Chain(url=chain.url), deployer, [v.address for v in ordered]
    )
    say(
        f"  contract {address}: {len(ordered)} validators, threshold {contracts.quorum_threshold(len(ordered))}"
    )
    return address


@dataclass(kw_only=True)
class Stack:
    """Handles on one running deployment."""

    kubeconfig: Path
    chain: Any
    """The dev chain (``pot.settlement.devchain.DevChain``)."""
    contract: str
    namespace: str = "default"
    say: Callable[[str], None] = print
    marks: dict[str, float] = field(default_factory=dict)

    @property
    def rpc_url(self) -> str:
        """The chain's JSON-RPC URL (reachable from pods)."""
        return str(self.chain.url)

    @property
    def chain_id(self) -> int:
        return int(self.chain.chain_id)

    def _settlement(self) -> tuple[Any, Any]:
        from pot.settlement import chain as chaining
        from pot.settlement import contracts

        c = chaining.Chain(url=self.rpc_url)
        return c, contracts.at(c, self.contract)

    def fund_task(self, name: str, pool: int) -> None:
        """Escrow ``pool`` wei for task ``name`` from a fresh submitter account."""
        c, settlement = self._settlement()
        submitter = keys.generate()
        self.chain.fund(submitter.address, pool + ETH)
        task_id = ids.chain_task_id(ids.task_key(self.namespace, name))
        c.transact(
            submitter,
            settlement.functions.fundTask(task_id),
            abi=settlement.abi,
            value=pool,
            what="fundTask",
        )
        self.say(f"  escrowed {pool / ETH:g} ETH for {self.namespace}/{name}")

    def stake_miners(self, amount: int) -> None:
        """Each example miner stakes ``amount`` wei (slashable on a rejected segment)."""
        c, settlement = self._settlement()
        for item, miner in sorted(dev_secret_keys("miner-keys").items()):
            if int(c.call("stakes", settlement.functions.stakes(miner.address).call)[0]) >= amount:
                continue
            self.chain.fund(miner.address, amount + ETH)
            c.transact(
                miner,
                settlement.functions.stake(),
                abi=settlement.abi,
                value=amount,
                what=f"stake {item}",
            )
        self.say(f"  miners staked {amount / ETH:g} ETH each")

    def balances(self, name: str) -> dict[str, Any]:
        """What the contract credited, slashed and settled for task ``name``."""
        from pot.settlement import reading

        c, _ = self._settlement()
        return reading.task_balances(c, self.contract, ids.task_key(self.namespace, name))

    def bring_up_validators(self, *, timeout: float = 240) -> dict[str, Any]:
        """helm install the operator, apply the keys and the ValidatorSet, wait until Ready."""
        self.say("==> helm install charts/pot-operator (namespace pot-system)")
        self.install_operator()
        self.say("==> kubectl apply examples/dev-keys.yaml examples/validatorset.yaml")
        self.apply([*load_examples("dev-keys.yaml"), self.validatorset_doc()])

        def ready() -> bool:
            return self.get("vset", "vset").get("status", {}).get("phase") == "Ready"

        self.wait_for("ValidatorSet vset to be Ready", ready, timeout=timeout, interval=2)
        status: dict[str, Any] = self.get("vset", "vset")["status"]
        self.say(
            f"  vset Ready: {status.get('readyReplicas')} replicas, view {status.get('view')}, "
            f"primary {status.get('primary')}"
        )
        return status

    def run_task(
        self,
        doc: dict[str, Any],
        *,
        timeout: float,
        on_tick: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Apply a TrainingTask and wait until it ends; returns the final object."""
        name = doc["metadata"]["name"]
        self.apply([doc])
        final: dict[str, Any] = {}

        def done() -> bool:
            task = self.get("tt", name)
            if on_tick is not None:
                on_tick(task)
            final.update(task)
            return task.get("status", {}).get("phase") in TERMINAL

        self.wait_for(f"TrainingTask {name} to finish", done, timeout=timeout)
        return final

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
            # Trainer state on the "nodes' disks" under this cluster's own
            # directory (the default, /var/lib/pot, needs root on a dev box).
            "--set",
            f"trainerStore.hostDir={self.kubeconfig.parent.resolve() / 'node-disks' / 'pot-tasks'}",
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
