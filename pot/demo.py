"""``pot demo``: the whole mission on one machine, the way users meet it.

Starts the embedded local cluster and a dev chain, deploys the settlement
contract and escrows the task's pool, installs the operator with the real
Helm chart, applies ``examples/validatorset.yaml`` and ``examples/task.yaml``
with the real kubectl, shows live progress until the payout, then prints the
payees and where the time went. On failure it exits non-zero with the reason
and where to look. ``--keep`` leaves everything up for exploration.

Every run starts from an empty cluster (``fresh``): the chain is new each time,
and a TrainingTask that an earlier run left Succeeded would otherwise count as
done at once, against a contract that never paid it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from pot import errors, stack

ETH = 10**18
TASK_NAME = "mlp-demo"
DEFAULT_DIR = Path("~/.pot/demo").expanduser()


@dataclass
class Clock:
    """Wall time per stage (printed at the end)."""

    start: float = field(default_factory=time.monotonic)
    stages: list[tuple[str, float]] = field(default_factory=list)
    _last: float = field(default_factory=time.monotonic)

    def mark(self, stage: str) -> None:
        now = time.monotonic()
        self.stages.append((stage, now - self._last))
        self._last = now

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start


CLUSTER_STATE = ("state", "kubelet", "node-disks")
"""What a demo run leaves under its directory that the next one must not see: the API
server's object log, the kubelet's pods and volumes (the validators' PBFT logs and views,
signed for the previous chain) and the trainers' node-local disks."""


def fresh(cluster_dir: Path) -> None:
    """Stop a cluster left running in ``cluster_dir`` (``--keep``) and forget its objects."""
    from pot.localcluster import launching

    with contextlib.suppress(errors.PotError):
        launching.down(cluster_dir)
    for name in CLUSTER_STATE:
        shutil.rmtree(cluster_dir / name, ignore_errors=True)


def _gateway(cluster_dir: Path, timeout: float = 60.0) -> str:
    """The host's address on the pod network (how pods reach the dev chain).

    The kubelet creates the pod network just after the API server serves, so
    this waits for its record.
    """
    import ipaddress

    record = cluster_dir / "kubelet" / "network.json"
    deadline = time.monotonic() + timeout
    while not record.exists():
        if time.monotonic() > deadline:
            raise errors.ClusterError(
                f"the local cluster's pod network did not come up ({record} missing)"
            )
        time.sleep(0.2)
    subnet = json.loads(record.read_text())["subnet"]
    return str(ipaddress.IPv4Network(subnet).network_address + 1)


def _progress_line(task: dict[str, Any], vset: dict[str, Any], elapsed: float) -> str:
    st = task.get("status", {})
    p = st.get("progress", {})
    vs = vset.get("status", {})
    return (
        f"[{elapsed:6.1f}s] {st.get('phase', 'Pending'):<10} step {p.get('step', 0)}/{p.get('totalSteps', '?')}"
        f"  segments {p.get('segmentsCommitted', 0)} committed, {p.get('segmentsVerified', 0)} verified,"
        f" {p.get('segmentsRejected', 0)} rejected  |  validators {vs.get('readyReplicas', 0)}/"
        f"{vset.get('spec', {}).get('replicas', '?')} ready, view {vs.get('view', '-')}, primary {vs.get('primary', '-')}"
    )


def run(
    *, cluster_dir: Path, keep: bool, timeout: float, chain_kind: str, say: Any = typer.echo
) -> dict[str, Any]:
    """Run the demo; returns a summary (payouts, tx, stage times). Raises PotError on failure."""
    from pot.localcluster import launching
    from pot.settlement import devchain

    clock = Clock()
    namespace = "default"
    (task_doc,) = stack.load_examples("task.yaml")
    reward = task_doc["spec"]["reward"]
    chain = None
    try:
        say(f"==> local cluster in {cluster_dir} (fresh; HTTPS, RBAC enforced)")
        fresh(cluster_dir)
        kubeconfig, _ = launching.up(cluster_dir, authorization="RBAC")
        clock.mark("cluster")
        gateway = _gateway(cluster_dir)
        say(f"==> dev chain ({chain_kind}) on {gateway}")
        chain = devchain.start(chain_kind, host=gateway)  # type: ignore[arg-type]
        say(f"  {chain.kind} at {chain.url} (chain id {chain.chain_id})")
        st = stack.Stack(
            kubeconfig=kubeconfig,
            chain=chain,
            contract=stack.deploy_contract(chain, say),
            namespace=namespace,
            say=say,
        )
        st.fund_task(TASK_NAME, int(reward["pool"]))
        st.stake_miners(int(reward.get("minerStake", ETH)))
        clock.mark("chain")
        st.bring_up_validators(timeout=min(timeout, 300))
        clock.mark("validators")
        say("==> kubectl apply examples/task.yaml")
        phases: dict[str, float] = {}
        last = [""]

        def tick(task: dict[str, Any]) -> None:
            phases.setdefault(task.get("status", {}).get("phase", "Pending"), time.monotonic())
            line = _progress_line(task, st.get("vset", "vset"), clock.elapsed)
            if line.split("] ", 1)[1] != last[0]:
                say(line)
                last[0] = line.split("] ", 1)[1]

        task = st.run_task(task_doc, timeout=timeout, on_tick=tick)
        status = task["status"]
        if status["phase"] != "Succeeded":
            raise errors.PotError(
                f"task {TASK_NAME} {status['phase']}: {status.get('reason', '')} {status.get('message', '')}".strip()
            )
        clock.mark("task")
        balances = st.balances(TASK_NAME)
        _report(say, status, balances, phases, clock)
        return {
            "status": status,
            "balances": balances,
            "stages": clock.stages,
            "elapsed": clock.elapsed,
        }
    finally:
        if keep:
            say(
                f"--keep: cluster and chain left running; export KUBECONFIG={cluster_dir / 'kubeconfig'}"
            )
            if chain is not None:
                say(f"  chain RPC {chain.url} (stops with this process)")
        else:
            with contextlib.suppress(errors.PotError):
                launching.down(cluster_dir)
            if chain is not None:
                chain.close()


def _report(
    say: Any,
    status: dict[str, Any],
    balances: dict[str, Any],
    phases: dict[str, float],
    clock: Clock,
) -> None:
    roles = {
        p["address"]: p.get("role", "") for p in (status.get("settlement") or {}).get("payouts", [])
    }
    say("")
    say("payouts (credited on chain by the settlement contract; payees withdraw() them):")
    rows = sorted(balances["accounts"].items(), key=lambda kv: (-int(kv[1]["credited"]), kv[0]))
    for account, acc in rows:
        say(f"  {account}  {roles.get(account, ''):<9}  {int(acc['credited']) / ETH:>10.6f} ETH")
    total = sum(int(acc["credited"]) for _, acc in rows)
    say(
        f"  {'total':<42}  {'':<9}  {total / ETH:>10.6f} ETH  (escrow left: {int(balances['escrow']) / ETH:g} ETH)"
    )
    for account, taken in balances.get("slashed", {}).items():
        say(f"  slashed {account}: {int(taken) / ETH:g} ETH of stake")
    for rnd in balances["rounds"]:
        say(f"  settlement tx {rnd['tx']} (round {rnd['round']}, block {rnd['block']})")
    say("")
    say("where the time went:")
    stages = dict(clock.stages)
    say(f"  {'local cluster up':<30} {stages.get('cluster', 0):6.1f}s")
    say(f"  {'chain, contract, escrow':<30} {stages.get('chain', 0):6.1f}s")
    say(f"  {'operator (helm) + validators':<30} {stages.get('validators', 0):6.1f}s")
    applied = phases.get("Pending", phases.get("Scheduling", 0.0))
    training = phases.get("Training")
    after = min(
        (phases[p] for p in ("Verifying", "Settling", "Succeeded") if p in phases), default=None
    )
    done = phases.get("Succeeded")
    if training is not None:
        say(f"  {'scheduling (gang release)':<30} {training - applied:6.1f}s")
    if training is not None and after is not None:
        say(f"  {'training + rolling audits':<30} {after - training:6.1f}s")
    if after is not None and done is not None:
        say(f"  {'final audits + settlement':<30} {done - after:6.1f}s")
    say(f"  {'total':<30} {clock.elapsed:6.1f}s")


def check_options(*, timeout: float, chain_kind: str) -> None:
    """Refuse bad options before anything starts (a cluster takes a while to come up)."""
    from pot.settlement import devchain

    if chain_kind not in ("auto", "anvil", "evm"):
        raise errors.ConfigError(f"--chain {chain_kind!r}: expected auto, anvil or evm")
    if chain_kind == "anvil" and devchain.anvil_path() is None:
        raise errors.ConfigError("--chain anvil: anvil is not installed (run `make install`)")
    if not timeout > 0:
        raise errors.ConfigError(f"--timeout {timeout:g}: must be more than 0 seconds")


def demo(
    keep: bool = typer.Option(
        False, "--keep", help="Leave the cluster and chain running afterwards."
    ),
    directory: Path = typer.Option(
        DEFAULT_DIR, "--dir", help="Where the local cluster keeps its state."
    ),
    timeout: float = typer.Option(600, "--timeout", help="Give up after this many seconds."),
    chain_kind: str = typer.Option(
        "auto", "--chain", help="auto (anvil if installed), anvil or evm."
    ),
) -> None:
    """Run the whole pipeline on the embedded local cluster and a dev chain."""
    check_options(timeout=timeout, chain_kind=chain_kind)
    try:
        summary = run(cluster_dir=directory, keep=keep, timeout=timeout, chain_kind=chain_kind)
    except errors.PotError as exc:
        typer.echo(f"demo failed: {exc}", err=True)
        logs = f"component logs in {directory / 'logs'}"
        if keep:
            look = (
                f"kubectl --kubeconfig {directory / 'kubeconfig'} describe tt {TASK_NAME}; {logs}"
            )
        else:
            look = f"{logs} (the cluster is down: rerun with --keep to inspect it)"
        typer.echo(f"where to look: {look}", err=True)
        raise typer.Exit(1) from None
    with contextlib.suppress(Exception):
        (directory / "demo-summary.json").write_text(json.dumps(summary, indent=2, default=str))
