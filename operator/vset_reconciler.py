"""The I/O shell of one ValidatorSet: apply its children, then report its view.

Children are (re)applied when the spec generation or the keys Secret changed
since this process last applied them (create, or patch when they exist),
and again every ``REPAIR_AFTER`` seconds while replica pods are missing (or
``RESYNC_AFTER``): children are not watched, so this repairs one deleted by
hand. In between, a reconcile only polls the replicas' ``GET /v1/status`` and writes
the status when it changed. Keys are read from the Secret to derive each
replica's address and public key for peers.json, and copied once, item for
item, into the set's own immutable Secret ``<set>-accepted-keys`` when its
membership is first accepted (``_keep_keys``): the replicas mount that copy, so
a key changed in the user's Secret afterwards (refused, ``MembershipChanged``)
never reaches a replica that restarts. While the user's Secret is gone, the set runs
on that copy: the children are built from it, and the set stays Ready with a
``KeysSecretPresent=False`` warning. Keys are never logged, and errors name
the Secret item, never its content.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from pot import errors, keys, urls
from pot.operator import (
    builders_validators,
    checks,
    conditions,
    kubeapi,
    names,
    posting,
    validators_client,
    vsets,
)
from pot.operator.runtime import VSET, Runtime

log = logging.getLogger("pot.operator")
JSON_PATCH = "application/json-patch+json"
REPAIR_AFTER = 30.0
"""Seconds between re-applies of the children while replica pods are missing."""
NAME_CONFLICT = "NameConflict"
"""A child's name is taken by an object this set does not control."""
RESYNC_AFTER = 600.0
"""Seconds between re-applies otherwise (a Service or ConfigMap deleted by hand)."""

PLURALS = {
    "ServiceAccount": "serviceaccounts",
    "ConfigMap": "configmaps",
    "Service": "services",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "StatefulSet": "statefulsets",
}


def identities(secret: dict[str, Any], n: int) -> list[builders_validators.Identity]:
    """Address and uncompressed public key of each replica's key (ConfigError names the item)."""
    name = secret["metadata"]["name"]
    data = secret.get("data") or {}
    out = []
    for i in range(n):
        item = f"validator-{i}.key"
        if item in data:
            text = base64.b64decode(data[item]).decode("utf-8", "replace").strip()
        elif item in (secret.get("stringData") or {}):
            text = str(secret["stringData"][item]).strip()
        else:
            raise errors.ConfigError(f'Secret "{name}" lacks {item}')
        try:
            key = keys.from_text(text, f'Secret "{name}" item {item}')
        except errors.KeyLoadError:
            # Not chained: the message names the item, and nothing may echo key material.
            raise errors.ConfigError(
                f'Secret "{name}" item {item}: not a secp256k1 private key'
            ) from None
        public = key.private.public_key.to_bytes()
        out.append(
            builders_validators.Identity(address=key.address, public_key="0x04" + public.hex())
        )
    return out


async def apply_children(
    rt: Runtime, kube: kubeapi.Client, vset: dict[str, Any]
) -> checks.Problem | None:
    """Create-or-patch every child; a Problem when the keys are unusable."""
    meta, spec = vset["metadata"], vset["spec"]
    ns = meta["namespace"]
    secret_name = spec["keysSecretRef"]["name"]
    n = int(spec["replicas"])
    try:
        secret = await kube.get("v1", "secrets", ns, secret_name)
    except kubeapi.NotFound:
        # Gone after the membership was accepted: the replicas mount the set's own copy,
        # which is the membership, so the children are built from it (a warning only).
        kept = await kept_keys(kube, vset)
        if kept is None:
            return checks.Problem(
                checks.KEYS_NOT_FOUND,
                f'Secret "{secret_name}" (spec.keysSecretRef.name) not found in namespace "{ns}"',
                False,
            )
        kept_n = _key_count(kept)
        if kept_n != n:
            return _refusal(
                [f"spec.replicas {kept_n} -> {n}"], secret_name, names.vset_keys(meta["name"])
            )
        secret = kept
    try:
        ids = identities(secret, n)
    except errors.ConfigError as exc:
        return checks.Problem("InvalidKey", str(exc), True)
    rpc = _rpc_secret_problem(rt, ns, (spec.get("chain") or {}).get("rpcSecretRef"))
    if rpc is not None:
        return rpc
    children = builders_validators.build_all(vset, ids, rt.config)
    configmap = next(c for c in children if c["kind"] == "ConfigMap")  # the peers.json
    refused = await _keep_keys(kube, vset, secret, ids, configmap)
    if refused is not None:
        return refused
    for child in children:
        kind, plural, name = child["kind"], PLURALS[child["kind"]], child["metadata"]["name"]
        if await kube.create(child, plural) is not None:
            continue
        # The name is taken. Only what this set controls is patched: a Service "x-peers"
        # of set "x" is the client Service of a set "x-peers", and a TrainingTask "x" has
        # a Service "x" too. Patching those rewired their selectors to this set's pods.
        live = await kube.get(child["apiVersion"], plural, ns, name)
        if not _controlled(live, vset):
            return _name_conflict(kind, name, ns, live, vset)
        if kind == "StatefulSet":
            await kube.patch(
                "apps/v1", plural, ns, name, statefulset_update(child), content_type=JSON_PATCH
            )
        else:
            body = {k: v for k, v in child.items() if k not in ("apiVersion", "kind")}
            await kube.patch(child["apiVersion"], plural, ns, name, body)
    return None


async def kept_keys(kube: kubeapi.Client, vset: Mapping[str, Any]) -> dict[str, Any] | None:
    """The set's own Secret of accepted keys (``<set>-accepted-keys``), when it has one
    that it controls (this uid: not an earlier set's of its name)."""
    meta = vset["metadata"]
    try:
        kept = await kube.get("v1", "secrets", meta["namespace"], names.vset_keys(meta["name"]))
    except kubeapi.NotFound:
        return None
    return kept if _controlled(kept, vset) else None


def _key_count(secret: Mapping[str, Any]) -> int:
    """How many ``validator-<i>.key`` items, from 0 on, a Secret of ours holds."""
    n = 0
    while f"validator-{n}.key" in (secret.get("data") or {}):
        n += 1
    return n


def _controlled(live: Mapping[str, Any], vset: Mapping[str, Any]) -> bool:
    """Whether this ValidatorSet (this uid, not an earlier one of its name) controls ``live``."""
    return any(o.get("uid") == vset["metadata"].get("uid") for o in kubeapi.controllers(live))


def _name_conflict(
    kind: str, name: str, ns: str, live: Mapping[str, Any], vset: Mapping[str, Any]
) -> checks.Problem:
    owners = kubeapi.controllers(live)
    kind_of_set = vset.get("kind", "ValidatorSet")
    if any(
        o.get("kind") == kind_of_set and o.get("name") == vset["metadata"]["name"] for o in owners
    ):
        # A set deleted and re-created under this name before the garbage collector took
        # the old one's children: they go soon, and this set is applied then (retried).
        return checks.Problem(
            NAME_CONFLICT,
            f'{kind} "{name}" in namespace "{ns}" still belongs to an earlier ValidatorSet '
            f'"{vset["metadata"]["name"]}" (deleted; the garbage collector removes its '
            "children): waiting for it to go",
            False,
        )
    holders = [f'{o.get("kind")} "{o.get("name")}"' for o in owners]
    return checks.Problem(
        NAME_CONFLICT,
        f'{kind} "{name}" exists in namespace "{ns}" and belongs to '
        f"{holders[0] if holders else 'no pot object'}, not to this ValidatorSet: "
        "its replicas need that name; rename the set (or that object)",
        False,
    )


async def _keep_keys(
    kube: kubeapi.Client,
    vset: dict[str, Any],
    secret: Mapping[str, Any],
    ids: list[builders_validators.Identity],
    configmap: Mapping[str, Any],
) -> checks.Problem | None:
    """Refuse a membership change; else make sure the accepted keys are kept.

    The replicas mount the set's own Secret ``<set>-accepted-keys``, created once from the
    user's keys Secret when the membership is first accepted and never written again
    (immutable). A key later changed in the user's Secret is refused, and never reaches a
    replica, not even one that restarts. A set made before that Secret existed gets it
    here too, but only while the user's keys still match its replicas' peers.json.
    """
    ns = vset["metadata"]["namespace"]
    # The name the user gave (``secret`` is the set's own copy while that Secret is gone).
    secret_name = vset["spec"]["keysSecretRef"]["name"]
    kept_name = names.vset_keys(vset["metadata"]["name"])
    try:
        kept: dict[str, Any] | None = await kube.get("v1", "secrets", ns, kept_name)
    except kubeapi.NotFound:
        kept = None
    if kept is not None and not _controlled(kept, vset):
        return _name_conflict("Secret", kept_name, ns, kept, vset)
    refused = await _membership_problem(kube, vset, configmap, secret_name, kept is not None)
    if refused is not None:
        return refused
    if kept is None:
        body = builders_validators.build_keys_spec(vset, secret)
        if await kube.create(body, "secrets") is not None:
            return None
        kept = await kube.get("v1", "secrets", ns, kept_name)  # made since the read
        if not _controlled(kept, vset):
            return _name_conflict("Secret", kept_name, ns, kept, vset)
    # The kept keys are the membership, also when the ConfigMap was deleted by hand.
    n = _key_count(kept)
    try:
        accepted = identities(kept, n)
    except errors.ConfigError as exc:  # not one this operator wrote (it is never changed)
        return checks.Problem(
            "InvalidKey",
            f'{exc}; delete Secret "{kept_name}", and it is copied again from Secret '
            f'"{secret_name}" while that matches the replicas\' peers.json',
            False,
        )
    changes = [f"spec.replicas {n} -> {len(ids)}"] if n != len(ids) else []
    changes += [
        f'Secret "{secret_name}" item validator-{i}.key (another key)'
        for i, (was, now) in enumerate(zip(accepted, ids, strict=False))
        if was.address.lower() != now.address.lower()
    ]
    return _refusal(changes, secret_name, kept_name) if changes else None


def _rpc_secret_problem(
    rt: Runtime, ns: str, ref: Mapping[str, Any] | None
) -> checks.Problem | None:
    """A Problem when ``spec.chain.rpcSecretRef`` names no Secret or no item in it: the
    settlement sidecars take their RPC URL from it, so no replica pod could start, and the
    set said only "0 of n replicas ready". Read from the watched Secrets' item names, never
    a value (a hosted RPC URL carries an API key)."""
    if not ref:
        return None
    name, item = str(ref.get("name", "")), str(ref.get("key", ""))
    where = f'Secret "{name}" (spec.chain.rpcSecretRef)'
    items = rt.secret_keys.get((ns, name))
    if items is None:
        return checks.Problem(
            "RpcSecretNotFound",
            f'{where} not found in namespace "{ns}": the settlement sidecars read the chain '
            "RPC URL from it, so no replica can start",
            False,
        )
    if item not in items:
        return checks.Problem(
            "RpcSecretKeyMissing",
            f"{where} has no item {item!r} (spec.chain.rpcSecretRef.key): the settlement "
            "sidecars read the chain RPC URL from it, so no replica can start",
            False,
        )
    return None


async def _membership_problem(
    kube: kubeapi.Client,
    vset: dict[str, Any],
    configmap: Mapping[str, Any],
    secret: str,
    kept: bool,
) -> checks.Problem | None:
    """A Problem when ``configmap`` would change who the running replicas are.

    The replicas' peers.json is the ConfigMap this set already has: a different set
    of replicas, keys, stakes or chain would be rolled onto them one at a time
    (``vsets.membership_changes``). The CRD refuses such spec edits; the keys live in a
    Secret it cannot see, and older CRDs lack the rules, so the operator checks too.
    ``kept``: the set has its Secret of accepted keys (the message says what that means).
    """
    meta = vset["metadata"]
    try:
        live = await kube.get("v1", "configmaps", meta["namespace"], configmap["metadata"]["name"])
    except kubeapi.NotFound:
        return None
    if not _controlled(live, vset):
        return None  # a set deleted and re-created under this name: its children go
    try:
        running = json.loads((live.get("data") or {}).get("peers.json", ""))
    except ValueError:
        return None  # not one we wrote: the apply below replaces it
    wanted = json.loads(configmap["data"]["peers.json"])
    changes = vsets.membership_changes(running, wanted, secret)
    if not changes:
        return None
    return _refusal(changes, secret, names.vset_keys(meta["name"]) if kept else "")


def _refusal(changes: list[str], secret: str, kept: str) -> checks.Problem:
    """``MembershipChanged``: what changed, what the replicas run on, and what to do.

    ``kept`` names the set's Secret of accepted keys; empty for a set made before the
    operator kept one, whose pods still mount the user's Secret."""
    keys_changed = any(f'Secret "{secret}" item' in c for c in changes)
    head = (
        f"not rolled out: {', '.join(changes)} changed, but the replicas, their keys, stakes "
        "and chain are fixed for the life of a ValidatorSet (PBFT membership cannot change, "
        "and the contract knows these addresses)"
    )
    undo = f'Put the old keys back in Secret "{secret}"' if keys_changed else "Revert the change"
    if kept:
        tail = (
            f'the set keeps running on the keys it accepted (Secret "{kept}"), replicas '
            f"that restart included. {undo} to clear this, or create a new ValidatorSet"
        )
    elif keys_changed:
        tail = (
            f'the replicas run on, but this set\'s pods still read Secret "{secret}" '
            "itself (it was created before the operator kept its own copy of the keys): "
            "until the old keys are back there, a replica that restarts takes the new key "
            f"and cannot join, and more than f such restarts stop the set. {undo} (the "
            "operator then keeps a copy, and restarts are safe), or create a new ValidatorSet"
        )
    else:
        tail = (
            f"the replicas keep the set they were created with. {undo}, or create a new "
            "ValidatorSet"
        )
    return checks.Problem(vsets.MEMBERSHIP_CHANGED, f"{head}; {tail}", False)


def _pointer(*keys: str) -> str:
    """RFC 6901 JSON pointer of ``keys`` (a label key's ``/`` becomes ``~1``)."""
    return "".join("/" + k.replace("~", "~0").replace("/", "~1") for k in keys)


def statefulset_update(built: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The JSON patch (RFC 6902) that brings the existing StatefulSet to ``built``.

    Only replicas, the pod template and the PVC retention policy may change
    after creation. Each is replaced whole ("add" replaces a member that
    exists), not merged: a JSON merge patch keeps every key it does not
    mention, so a nodeSelector or tolerations dropped from the ValidatorSet,
    or one key of a nodeSelector, would stay on the replicas for good. Labels
    are set one by one, so labels others put on the StatefulSet survive.
    """
    spec = built["spec"]
    ops: list[dict[str, Any]] = [
        {"op": "add", "path": _pointer("metadata", "labels", key), "value": value}
        for key, value in built["metadata"]["labels"].items()
    ]
    ops += [
        {"op": "add", "path": _pointer("spec", key), "value": spec[key]}
        for key in ("replicas", "template", "persistentVolumeClaimRetentionPolicy")
    ]
    return ops


def _ordinal(pod: dict[str, Any]) -> int:
    labels = pod["metadata"].get("labels") or {}
    text = labels.get(names.LABEL_POD_INDEX) or pod["metadata"]["name"].rsplit("-", 1)[-1]
    return int(text) if str(text).isdigit() else -1


def _pod_ready(pod: dict[str, Any]) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


async def replicas(
    rt: Runtime, vclient: validators_client.Client, ns: str, name: str
) -> list[vsets.Replica]:
    """Every replica pod with its answer to ``GET /v1/status`` (asked concurrently)."""
    pods = [
        p
        for p in rt.vset_pods.get((ns, name), {}).values()
        if not p["metadata"].get("deletionTimestamp")
    ]
    pods = [p for p in pods if _ordinal(p) >= 0]

    async def ask(pod: dict[str, Any]) -> vsets.Replica:
        ip = (pod.get("status") or {}).get("podIP")
        base = rt.config.validator_url or (
            f"http://{ip}:{builders_validators.HTTP_PORT}" if ip else ""
        )
        reply = await vclient.status(base) if base else None
        return vsets.Replica(ordinal=_ordinal(pod), pod_ready=_pod_ready(pod), reply=reply)

    return list(await asyncio.gather(*(ask(p) for p in pods)))


def _condition(status: dict[str, Any], ctype: str) -> tuple[str, str, str] | None:
    for c in status.get("conditions") or []:
        if c.get("type") == ctype:
            return str(c.get("status")), str(c.get("reason")), str(c.get("message"))
    return None


async def chain_condition(rt: Runtime, spec: dict[str, Any]) -> tuple[conditions.Status, str, str]:
    """Whether the ValidatorSet's chain answers, with the right chain id."""
    from pot.settlement import receipts

    chain = spec.get("chain") or {}
    ref = chain.get("rpcSecretRef")
    if ref and not chain.get("rpcUrl"):
        # The replicas' URL stays in their Secret: this condition does not read it (only a
        # task's admission does, on demand, for its miners' stakes: operator/stakes.py), and
        # the operator's own POT_CHAIN_RPC_URL may be another endpoint, or another chain.
        return (
            "Unknown",
            "RpcUrlInSecret",
            f'the chain RPC URL is in Secret "{ref.get("name", "")}" '
            "(spec.chain.rpcSecretRef), which only the settlement sidecars read; "
            "the operator does not check that chain",
        )
    # The URL peers.json carries (builders_validators.build_peers).
    url = chain.get("rpcUrl") or rt.config.chain_rpc_url
    if not url:
        return (
            "Unknown",
            "RpcUrlMissing",
            "spec.chain sets neither rpcUrl nor rpcSecretRef, and the operator has no "
            "POT_CHAIN_RPC_URL: settlement cannot reach a chain",
        )
    # A hosted RPC URL carries its API key: messages name only scheme, host and port.
    shown = urls.redact(url)
    try:
        got = await asyncio.to_thread(receipts.chain_id, url, timeout=rt.config.http_timeout)
    except errors.ChainError as exc:
        return (
            "False",
            "ChainUnreachable",
            f"{urls.redact_text(str(exc))}; settlement waits and retries with backoff",
        )
    want = int(chain.get("chainId") or 0)
    if want and got != want:
        return (
            "False",
            "ChainIdMismatch",
            f"chain RPC {shown} serves chain id {got}, spec.chain.chainId is {want}",
        )
    return "True", "ChainAnswers", f"chain RPC {shown} answers (chain id {got})"


async def reconcile(
    rt: Runtime, kube: kubeapi.Client, vclient: validators_client.Client, namespace: str, name: str
) -> None:
    """One pass over the ValidatorSet ``namespace/name``."""
    key = (namespace, name)
    vset = rt.vsets.get(key)
    if vset is None or vset["metadata"].get("deletionTimestamp") or not rt.active:
        return
    now = datetime.datetime.now(datetime.UTC)
    spec = vset.get("spec") or {}
    secret_name = (spec.get("keysSecretRef") or {}).get("name", "")
    problem = checks.vset_spec_problem(vset, rt.secret_keys.get((namespace, secret_name)))
    keys_missing = None
    if (
        problem is not None
        and problem.reason == checks.KEYS_NOT_FOUND
        and await kept_keys(kube, vset) is not None
    ):
        # The replicas run on the set's copy of the accepted keys: a warning, not a block.
        problem, keys_missing = None, vsets.keys_secret_missing(vset)
    gen = int(vset["metadata"].get("generation") or 1)
    stamp = (gen, rt.secret_versions.get((namespace, secret_name), ""))
    # Children are not watched: one deleted by hand (the StatefulSet, and with it
    # every replica) comes back by a re-apply, soon while replicas are missing.
    at = rt.vset_applied_at.setdefault(key, time.monotonic())
    live = [
        p for p in rt.vset_pods.get(key, {}).values() if not p["metadata"].get("deletionTimestamp")
    ]
    short = len(live) < int(spec.get("replicas", 0) or 0)
    stale = time.monotonic() - at > (REPAIR_AFTER if short else RESYNC_AFTER)
    refused = None
    if problem is None and (rt.vset_applied.get(key) != stamp or stale):
        problem = await apply_children(rt, kube, vset)
        if problem is None:
            rt.vset_applied[key] = stamp
            rt.vset_applied_at[key] = time.monotonic()
        elif problem.reason == vsets.MEMBERSHIP_CHANGED:
            # Nothing applied, and the replicas run on: report them, and the refusal.
            refused, problem = problem, None
    reps = await replicas(rt, vclient, namespace, name) if problem is None else []
    chain = await chain_condition(rt, spec) if problem is None else None
    status = vsets.decide_status(
        vset,
        reps,
        problem=problem,
        now=now,
        chain=chain,
        refused=refused,
        keys_missing=keys_missing,
    )
    old = dict(vset.get("status") or {})
    old.pop("kopf", None)
    if status != old:
        fresh = await posting.write_status(kube, names.VSETS, vset, status)
        if fresh is None:
            rt.vset_queue.add((VSET, namespace, name), 0.2)
            return
        rt.vsets[key] = fresh
        for ctype in (vsets.CHAIN_REACHABLE, conditions.KEYS_PRESENT):
            was, cond = _condition(old, ctype), _condition(status, ctype)
            if cond is not None and cond[0] == "False" and was != cond:
                await posting.post_event(
                    kube, vset, "Warning", cond[1], cond[2], now=now, instance=rt.config.identity
                )
        if old.get("phase") != status.get("phase"):
            warn = status.get("phase") in ("Failed", "Degraded")
            await posting.post_event(
                kube,
                vset,
                "Warning" if warn else "Normal",
                str(status.get("phase")),
                str(status.get("message", "")),
                now=now,
                instance=rt.config.identity,
            )
            # Tasks waiting on this set may proceed (or must wait) now.
            for (tns, tname), task in rt.tasks.items():
                if (
                    tns == namespace
                    and ((task.get("spec") or {}).get("validatorSetRef") or {}).get("name") == name
                ):
                    rt.queue.add(("task", tns, tname))
    if problem is None or not problem.permanent:
        rt.vset_queue.add((VSET, namespace, name), rt.config.poll_interval)
