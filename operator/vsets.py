"""ValidatorSet status from what the replicas say about themselves, pure.

The operator asks every replica ``GET /v1/status`` and reports the view most
ready replicas agree on, its primary (as a pod name, which is what a human
deletes when testing failover) and the highest committed sequence number.
``readyReplicas`` counts replicas that are ready *inside that view*, so a
replica stuck in an old view does not count (a quorum of 2f+1 is what lets
tasks proceed). Conditions: ``Ready`` (all n ready) and ``QuorumAvailable``
(at least 2f+1 ready); ``KeysSecretPresent`` once the user's keys Secret went
missing while the set runs on its own copy of the accepted keys (a warning: the
set stays Ready).
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pot.operator import builders_validators, checks, conditions, names

Body = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Replica:
    """One replica pod and its answer to ``GET /v1/status`` (None: no answer)."""

    ordinal: int
    pod_ready: bool
    reply: Mapping[str, Any] | None = None


CHAIN_REACHABLE = "ChainReachable"


def quorum(n: int) -> int:
    """2f+1."""
    return 2 * builders_validators.faults(n) + 1


def decide_status(
    vset: Body,
    replicas: list[Replica],
    *,
    problem: checks.Problem | None,
    now: datetime.datetime,
    chain: tuple[conditions.Status, str, str] | None = None,
    refused: checks.Problem | None = None,
    keys_missing: checks.Problem | None = None,
) -> dict[str, Any]:
    """The new ``status`` of a ValidatorSet.

    ``chain`` is the (status, reason, message) of the ``ChainReachable``
    condition: the replicas can agree without the chain, but nobody gets paid
    until it answers, so users must see it (DESIGN §7: an unreachable chain
    gets one clear message naming the endpoint). ``refused``: a spec or keys
    change the shell would not roll out (``MEMBERSHIP_CHANGED``); the replicas
    still run the set they were created with, so they are reported as they are,
    but the set is not Ready and its message says why. ``keys_missing``: the user's
    keys Secret is gone but the set has its copy of the accepted keys
    (``keys_secret_missing``); a warning in ``KeysSecretPresent``, never a block.
    """
    meta, spec = vset["metadata"], vset.get("spec") or {}
    gen = int(meta.get("generation") or 1)
    old = dict(vset.get("status") or {})
    old.pop("kopf", None)
    status = dict(old)
    n = int(spec.get("replicas", 0) or 0)

    def cond(ctype: str, value: conditions.Status, reason: str, message: str) -> None:
        status["conditions"] = conditions.put(
            status.get("conditions"), ctype, value, reason, message, generation=gen, now=now
        )

    status["observedGeneration"] = gen
    status["replicas"] = len(replicas)
    if chain is not None:
        cond(CHAIN_REACHABLE, *chain)
    if keys_missing is not None:
        cond(conditions.KEYS_PRESENT, "False", keys_missing.reason, keys_missing.message)
    elif conditions.find(status.get("conditions"), conditions.KEYS_PRESENT) is not None:
        if problem is not None and problem.reason == checks.KEYS_NOT_FOUND:
            cond(conditions.KEYS_PRESENT, "False", problem.reason, problem.message)
        else:
            secret = (spec.get("keysSecretRef") or {}).get("name", "")
            cond(
                conditions.KEYS_PRESENT,
                "True",
                "KeysSecretFound",
                f'Secret "{secret}" (spec.keysSecretRef.name) is back',
            )
    if problem is not None:
        status.update(phase="Failed" if problem.permanent else "Pending", message=problem.message)
        cond(conditions.READY, "False", problem.reason, problem.message)
        cond(conditions.QUORUM, "False", problem.reason, problem.message)
        status["readyReplicas"] = 0
        return status
    answers = [r for r in replicas if r.reply is not None and r.reply.get("ready") and r.pod_ready]
    views = Counter(int(r.reply.get("view", 0)) for r in answers if r.reply is not None)
    ready = 0
    if views:
        view, _ = max(views.items(), key=lambda kv: (kv[1], kv[0]))
        in_view = [
            r for r in answers if r.reply is not None and int(r.reply.get("view", 0)) == view
        ]
        ready = len(in_view)
        primaries = Counter(int(r.reply.get("primary", -1)) for r in in_view if r.reply is not None)
        primary = primaries.most_common(1)[0][0]
        status["view"] = view
        if primary >= 0:
            status["primary"] = names.replica_pod(meta["name"], primary)
        status["lastCommittedSeq"] = max(
            int(r.reply.get("lastCommittedSeq", 0)) for r in in_view if r.reply
        )
    status["readyReplicas"] = ready
    need = quorum(n)
    has_quorum = ready >= need
    if ready == n and n > 0:
        status.update(phase="Ready", message=f"all {n} replicas ready in view {status.get('view')}")
        cond(conditions.READY, "True", "AllReplicasReady", status["message"])
    else:
        if has_quorum:
            msg = f"{ready} of {n} replicas ready (quorum {need}); tolerating the rest"
            status.update(phase="Degraded", message=msg)
        elif old.get("phase") in ("Ready", "Degraded"):
            msg = f"only {ready} of {n} replicas ready, below the quorum of {need}: no progress"
            status.update(phase="Degraded", message=msg)
        else:
            msg = f"{ready} of {n} replicas ready (quorum {need})"
            status.update(phase="Progressing", message=msg)
        cond(conditions.READY, "False", "ReplicasNotReady", msg)
    if refused is not None:
        if status["phase"] == "Ready":
            status["phase"] = "Degraded"
        status["message"] = refused.message
        cond(conditions.READY, "False", refused.reason, refused.message)
    if has_quorum:
        cond(
            conditions.QUORUM,
            "True",
            "QuorumReady",
            f"{ready} of {n} replicas ready (quorum {need})",
        )
    else:
        cond(
            conditions.QUORUM, "False", "NoQuorum", f"{ready} of {n} replicas ready (quorum {need})"
        )
    return status


MEMBERSHIP_CHANGED = "MembershipChanged"


def keys_secret_missing(vset: Body) -> checks.Problem:
    """The warning of a set whose keys Secret is gone but which has its own copy of the
    accepted keys (``<set>-accepted-keys``): the replicas mount that copy, so they run on,
    and nothing about the membership changed. Not a block (``KeysSecretPresent=False``)."""
    meta, spec = vset["metadata"], vset.get("spec") or {}
    secret = (spec.get("keysSecretRef") or {}).get("name", "")
    kept = names.vset_keys(meta["name"])
    return checks.Problem(
        checks.KEYS_NOT_FOUND,
        f'Secret "{secret}" (spec.keysSecretRef.name) not found in namespace '
        f'"{meta["namespace"]}": the set runs on the keys it accepted (Secret "{kept}"), '
        f'replicas that restart included. Re-create Secret "{secret}" with the same keys to '
        f"clear this; other keys are refused ({MEMBERSHIP_CHANGED})",
        False,
    )


def membership_changes(running: Body, wanted: Body, secret: str) -> list[str]:
    """What differs in who the validators are between the peers.json the replicas run
    (``running``) and the one the spec and keys Secret would give (``wanted``).

    Replicas, their keys, stakes and the chain domain define the set: every replica
    computes and signs allocations under them, and the contract knows these addresses.
    The StatefulSet rolls a new peers.json onto the replicas one at a time, so a change
    would leave them disagreeing on who the validators are; the shell refuses it.
    """
    out = []
    if running.get("n") != wanted.get("n"):
        out.append(f"spec.replicas {running.get('n')} -> {wanted.get('n')}")
    if [str(s) for s in running.get("stakes") or []] != [
        str(s) for s in wanted.get("stakes") or []
    ]:
        out.append("spec.stakes")
    old_chain, new_chain = running.get("chain") or {}, wanted.get("chain") or {}
    if old_chain.get("chainId") != new_chain.get("chainId"):
        out.append("spec.chain.chainId")
    if str(old_chain.get("contract", "")).lower() != str(new_chain.get("contract", "")).lower():
        out.append("spec.chain.contract")
    old_reps, new_reps = running.get("replicas") or [], wanted.get("replicas") or []
    for i in range(min(len(old_reps), len(new_reps))):
        if str(old_reps[i].get("address", "")).lower() != str(new_reps[i].get("address")).lower():
            out.append(f'Secret "{secret}" item validator-{i}.key (another key)')
    return out


def view_of(vset: Body) -> checks.VsetView:
    """What a TrainingTask needs to know of this ValidatorSet."""
    status = vset.get("status") or {}
    return checks.VsetView(
        name=vset["metadata"]["name"],
        phase=str(status.get("phase") or ""),
        quorum=conditions.is_true(status.get("conditions"), conditions.QUORUM),
    )
