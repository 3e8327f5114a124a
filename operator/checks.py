"""Checks of a TrainingTask beyond its CRD schema, with messages naming the fault.

The schema (crds/trainingtask.yaml) already refuses malformed specs at the API
server; what it cannot know is the cluster: does the ValidatorSet exist and
hold a quorum, does the miner-keys Secret carry a key for every node rank, are
the child names valid DNS labels, and can the gang *ever* fit the nodes
(Kubeflow #1617: jobs shown Running while their pods are unschedulable — here
an impossible gang fails at once, with the numbers). Pure: the shell passes
what its watches hold.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from pot.operator import names

Body = Mapping[str, Any]

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

# Reasons (CamelCase, stable: users and alerts grep for them).
INVALID_SPEC = "InvalidSpec"
VSET_NOT_FOUND = "ValidatorSetNotFound"
VSET_NOT_READY = "ValidatorSetNotReady"
KEYS_NOT_FOUND = "MinerKeysNotFound"
KEYS_MISSING = "MinerKeysMissing"
UNSCHEDULABLE = "Unschedulable"
INSUFFICIENT = "InsufficientCapacity"
# The miners' stakes on the ValidatorSet's chain, read once at admission (operator/stakes.py).
STAKE_MISSING = "MinerStakeMissing"
CHAIN_UNREACHABLE = "ChainUnreachable"
CHAIN_ID_MISMATCH = "ChainIdMismatch"
CONTRACT_NOT_FOUND = "ContractNotFound"
STAKES_VERIFIED = "StakesVerified"
LOCK_SHORT = "StakeLockShorterThanTask"
LOCK_COVERS = "StakeLockCoversTask"
MINER_STAKE_DEFAULT = 10**18
"""``spec.reward.minerStake`` when absent: the CRD's default, and the one the validators
count and slash (``pot.validator.specs.parse_reward``)."""
LOCK_MARGIN = 24 * 3600
"""Seconds a miner's stake must stay locked after the task's deadline: the validators
still audit the last segments and settle after the gang stops (a day, as a bound)."""


@dataclass(frozen=True, slots=True)
class Problem:
    """Why a task cannot proceed: ``permanent`` ones fail it, others make it wait."""

    reason: str
    message: str
    permanent: bool
    retry: float | None = None
    """Seconds until the shell looks again (None: the state machine's own poll)."""


@dataclass(frozen=True, slots=True)
class VsetView:
    """What a task needs to know of its ValidatorSet."""

    name: str
    phase: str
    quorum: bool


def spec_problems(task: Body) -> list[Problem]:
    """Defence in depth over the schema, plus name-length limits of the children."""
    meta, spec = task["metadata"], task.get("spec") or {}
    name = meta["name"]
    out: list[Problem] = []
    res = spec.get("resources") or {}
    nodes = int(res.get("nodes", 0) or 0)
    if nodes < 1:
        out.append(Problem(INVALID_SPEC, "spec.resources.nodes must be at least 1", True))
    last_pod = names.trainer_pod(name, max(nodes - 1, 0))
    if not _DNS_LABEL.match(name):
        out.append(
            Problem(
                INVALID_SPEC,
                f"metadata.name {name!r} must be a DNS label (it names the gang's Service)",
                True,
            )
        )
    elif len(last_pod) > 63:
        out.append(
            Problem(
                INVALID_SPEC,
                f"metadata.name is too long: pod hostname {last_pod!r} would exceed 63 characters "
                f"(at most {63 - len(last_pod) + len(name)} characters for {nodes} nodes)",
                True,
            )
        )
    gpus = int(res.get("gpusPerNode", 0) or 0)
    backend = res.get("backend", "auto")
    if backend == "nccl" and gpus < 1:
        out.append(
            Problem(INVALID_SPEC, "spec.resources.gpusPerNode must be >= 1 with backend nccl", True)
        )
    if backend == "gloo" and gpus > 0:
        out.append(
            Problem(INVALID_SPEC, "spec.resources.gpusPerNode must be 0 with backend gloo", True)
        )
    hp, proof = spec.get("hyperparameters") or {}, spec.get("proof") or {}
    if hp.get("steps") and proof.get("segmentSteps") and proof["segmentSteps"] > hp["steps"]:
        out.append(
            Problem(
                INVALID_SPEC,
                "spec.proof.segmentSteps must not exceed spec.hyperparameters.steps",
                True,
            )
        )
    for key in (spec.get("nccl") or {}).get("env") or {}:
        if not str(key).startswith("NCCL_"):
            out.append(
                Problem(INVALID_SPEC, f"spec.nccl.env: key {key!r} must start with NCCL_", True)
            )
    for field in ("validatorSetRef", "minerKeysSecretRef"):
        if not (spec.get(field) or {}).get("name"):
            out.append(Problem(INVALID_SPEC, f"spec.{field}.name is required", True))
    return out


def vset_problem(task: Body, vset: VsetView | None, *, grace_over: bool) -> Problem | None:
    """The task's ValidatorSet must exist (after a grace period, so `kubectl apply
    -f dir/` may create the task first) and have a PBFT quorum."""
    ref = task["spec"]["validatorSetRef"]["name"]
    ns = task["metadata"]["namespace"]
    if vset is None:
        msg = f'ValidatorSet "{ref}" (spec.validatorSetRef.name) not found in namespace "{ns}"'
        return Problem(VSET_NOT_FOUND, msg, grace_over)
    if vset.phase == "Failed":
        return Problem(VSET_NOT_READY, f'ValidatorSet "{ref}" has failed; see its status', True)
    if not vset.quorum:
        msg = (
            f'waiting for ValidatorSet "{ref}" to reach a quorum (phase {vset.phase or "Pending"})'
        )
        return Problem(VSET_NOT_READY, msg, False)
    return None


def vset_gone(task: Body, *, trained: bool) -> Problem:
    """The task's ValidatorSet was deleted after the task was registered with it.

    Its replicas, and with their data claims the task's registration, verdicts and
    allocation, are gone; a set re-created under the name starts empty. A task still
    training fails (nothing it does can be verified or paid); one that finished
    training keeps its phase, as an allocation may already be on chain, and says why
    it will not move.
    """
    ref = task["spec"]["validatorSetRef"]["name"]
    ns = task["metadata"]["namespace"]
    msg = (
        f'ValidatorSet "{ref}" (spec.validatorSetRef.name) was deleted from namespace "{ns}" '
        "while the task depended on it: its replicas held the task's registration and verdicts"
    )
    if trained:
        return Problem(VSET_NOT_FOUND, msg + ", so the task cannot be verified or settled", False)
    return Problem(VSET_NOT_FOUND, msg + "; create the task again under a new name", True)


def keys_problem(task: Body, keys: frozenset[str] | None, *, grace_over: bool) -> Problem | None:
    """The miner-keys Secret must hold ``miner-<r>.key`` for every node rank."""
    secret = task["spec"]["minerKeysSecretRef"]["name"]
    ns = task["metadata"]["namespace"]
    if keys is None:
        msg = f'Secret "{secret}" (spec.minerKeysSecretRef.name) not found in namespace "{ns}"'
        return Problem(KEYS_NOT_FOUND, msg, grace_over)
    nodes = int(task["spec"]["resources"]["nodes"])
    missing = [f"miner-{r}.key" for r in range(nodes) if f"miner-{r}.key" not in keys]
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        msg = f'Secret "{secret}" lacks {shown} (one key per node rank 0..{nodes - 1})'
        return Problem(KEYS_MISSING, msg, grace_over)
    return None


KEYS_NOT_FOUND = "KeysSecretNotFound"


def vset_spec_problem(vset: Body, keys: Collection[str] | None) -> Problem | None:
    """A ValidatorSet needs n = 3f+1 (f >= 1) and validator-<i>.key for each replica."""
    spec = vset.get("spec") or {}
    n = int(spec.get("replicas", 0) or 0)
    if n < 4 or (n - 1) % 3:
        return Problem(
            INVALID_SPEC, f"spec.replicas={n}: must be 3f+1 with f >= 1 (4, 7, 10, ...)", True
        )
    secret = (spec.get("keysSecretRef") or {}).get("name", "")
    if keys is None:
        ns = vset["metadata"]["namespace"]
        return Problem(
            KEYS_NOT_FOUND,
            f'Secret "{secret}" (spec.keysSecretRef.name) not found in namespace "{ns}"',
            False,
        )
    missing = [f"validator-{i}.key" for i in range(n) if f"validator-{i}.key" not in keys]
    if missing:
        return Problem("KeysMissing", f'Secret "{secret}" lacks {", ".join(missing)}', False)
    return None


@dataclass(frozen=True, slots=True)
class Stake:
    """One account's ``stakes(address)`` on the settlement contract, in wei."""

    amount: int
    """Active: what a rejected segment slashes first, and all that admission counts."""
    pending: int = 0
    """Requested for unstaking: slashable only until ``unlock_at``, then withdrawable."""
    unlock_at: int = 0


@dataclass(frozen=True, slots=True)
class ChainView:
    """What the ValidatorSet's chain said at a task's admission (``stakes.read``)."""

    url: str
    """The RPC URL, redacted (a hosted one carries an API key)."""
    chain_id: int
    has_code: bool = True
    withdrawal_delay: int = 0
    """``withdrawalDelay()``: seconds unstaked stake stays slashable."""
    stakes: Mapping[str, Stake] = dataclasses.field(default_factory=dict)
    """By address, lowercase."""


@dataclass(frozen=True, slots=True)
class StakeCheck:
    """The admission's verdict on the miners' stakes: ``problem`` makes the task wait;
    else ``verified`` says what was checked, and ``lock`` whether the stake stays
    locked (slashable) for as long as the task may run (``lock.reason`` LOCK_SHORT: a
    warning, never a block)."""

    problem: Problem | None = None
    verified: str = ""
    lock: Problem | None = None


def stake_check(
    task: Body, chain: Mapping[str, Any], miners: Mapping[int, str], view: ChainView
) -> StakeCheck:
    """Every bound miner's *active* stake must cover ``spec.reward.minerStake``.

    R_i = pool x S_i P_i / sum S_j P_j counts ``minerStake`` as each miner's S_i, and a
    rejected segment slashes the miner's stake on chain: a miner without it would be
    paid as one who staked, and cheat at no cost. Stake requested for unstaking does
    not count (it can be withdrawn once its delay is over, possibly before the
    verdict). ``miners``: node rank -> address (ranks whose key is unusable are left
    out: their trainers fail on it anyway); ranks of one address need one minerStake
    between them, as the validators pay and slash by address. Pure.
    """
    spec = task.get("spec") or {}
    need = int((spec.get("reward") or {}).get("minerStake") or MINER_STAKE_DEFAULT)
    vset = (spec.get("validatorSetRef") or {}).get("name", "")
    where = f'ValidatorSet "{vset}" spec.chain'
    want = int(chain.get("chainId") or 0)
    if want and view.chain_id != want:
        msg = (
            f"chain RPC {view.url} serves chain id {view.chain_id}, {where}.chainId is {want}: "
            "the miners' stakes cannot be checked on the chain the task settles on"
        )
        return StakeCheck(Problem(CHAIN_ID_MISMATCH, msg, False))
    if not view.has_code:
        msg = (
            f"no contract at {chain.get('contract')} ({where}.contract) on chain "
            f"{view.chain_id} ({view.url}): deploy PotSettlement (`pot chain deploy`) and "
            "set its address"
        )
        return StakeCheck(Problem(CONTRACT_NOT_FOUND, msg, False))
    # Ranks sharing an address are one miner to the validators (its work, its pay, one
    # slash of minerStake per round): one stake of minerStake covers them all.
    ranks: dict[str, list[int]] = {}
    for rank, address in sorted(miners.items()):
        ranks.setdefault(address.lower(), []).append(rank)
    short = []
    for lower, held_by in ranks.items():
        held = view.stakes.get(lower, Stake(0))
        if held.amount < need:
            pending = (
                f" ({held.pending} wei pending unstake does not count)" if held.pending else ""
            )
            who = (
                f"node rank {held_by[0]}"
                if len(held_by) == 1
                else f"node ranks {', '.join(map(str, held_by))} (one address, one stake)"
            )
            short.append(
                f"{who} miner {miners[held_by[0]]} has {held.amount} wei of active stake, "
                f"needs {need}{pending}: pot chain stake --key-file miner-{held_by[0]}.key "
                f"--amount {need - held.amount}"
            )
    if short:
        shown = "; ".join(short[:3]) + (f"; and {len(short) - 3} more" if len(short) > 3 else "")
        msg = (
            f"spec.reward.minerStake={need} wei must be staked (active) by every miner on "
            f"contract {chain.get('contract')} before the task starts: {shown}"
        )
        return StakeCheck(Problem(STAKE_MISSING, msg, False))
    verified = (
        f"each of {len(ranks)} miners has at least {need} wei of active stake on contract "
        f"{chain.get('contract')} (checked at admission)"
    )
    return StakeCheck(verified=verified, lock=lock_check(task, view.withdrawal_delay))


def lock_check(task: Body, withdrawal_delay: int) -> Problem:
    """Whether a stake stays slashable for as long as the task may run. Admission counts
    only active stake, but a miner may request to unstake it the moment the task is
    admitted and complete the unstake ``withdrawal_delay`` later: if the task (and its
    verification) runs longer, the verdict finds nothing to slash."""
    limit = ((task.get("spec") or {}).get("runPolicy") or {}).get("activeDeadlineSeconds")
    covered = withdrawal_delay - LOCK_MARGIN
    days = f"{withdrawal_delay / 86400:g} days"
    if limit is None or int(limit) > covered:
        runs = "is unset" if limit is None else f"is {limit}s"
        msg = (
            f"runPolicy.activeDeadlineSeconds {runs}, longer than the contract's "
            f"withdrawalDelay ({withdrawal_delay}s, {days}) less a {LOCK_MARGIN // 3600}h "
            "margin for verification: a miner may request to unstake once the task is admitted "
            "and withdraw before the verdict, escaping a slash; set "
            f"activeDeadlineSeconds to at most {max(covered, 0)}"
        )
        return Problem(LOCK_SHORT, msg, False)
    msg = (
        f"stakes stay slashable for withdrawalDelay={withdrawal_delay}s ({days}), beyond "
        f"runPolicy.activeDeadlineSeconds={limit} plus a {LOCK_MARGIN // 3600}h margin"
    )
    return Problem(LOCK_COVERS, msg, False)
