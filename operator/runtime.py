"""The operator's in-memory view of the cluster, fed by kopf's watches.

kopf streams TrainingTasks, ValidatorSets, Pods, Nodes and Secrets into
``observe_*``; reconcilers read only from here, so a reconcile costs no API
reads at all (the bench counts requests per task). When kopf watches only
some namespaces, ``usage_watching`` streams the other namespaces' pods into
``observe_foreign_pod``, which keeps only the node usage they add. Secrets are reduced to
their key *names* on arrival, plus the address of each ``miner-<rank>.key``
(registrations bind every node rank to its miner): no key material is kept
(validator keys are read on demand, used to derive public identities, and
dropped).

Cache staleness is handled where it matters: a status written by the
operator replaces the cached body (watch events older than it are ignored),
and pods the operator has just created or deleted are remembered as
"expectations" until the watch confirms them, so a reconcile never recreates
a pod it made a moment ago (which would be a 409, or after a restart, a
duplicate).

Room promised but not yet taken is kept too: every released trainer pod the
scheduler has not bound yet holds a ``gang.Claim`` (from the watch, or
reserved by the shell the moment it decides to create or release a gang,
before its first write), so the next gang's count sees it (``pending``).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pot import errors, keys
from pot.operator import gang, names, queueing, stakes
from pot.operator.config import Config

Body = dict[str, Any]
Key = tuple[str, str, str]  # (kind, namespace, name)

TASK, VSET = "task", "vset"
EXPECTATION_TTL = 30.0


def _rv(body: Mapping[str, Any]) -> int:
    text = str((body.get("metadata") or {}).get("resourceVersion") or "")
    return int(text) if text.isdigit() else -1


def slim_pod(pod: Mapping[str, Any]) -> Body:
    """The parts of a pod the operator reads (a cache of thousands of full pod
    bodies would dominate the operator's memory)."""
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}

    def resources(containers: Any) -> list[dict[str, Any]]:
        return [
            {"name": c.get("name"), "resources": c.get("resources") or {}} for c in containers or []
        ]

    keep = ("name", "namespace", "uid", "resourceVersion", "labels", "deletionTimestamp")
    slim_meta = {k: meta[k] for k in keep if k in meta}
    slim_spec: dict[str, Any] = {"containers": resources(spec.get("containers"))}
    if spec.get("initContainers"):
        slim_spec["initContainers"] = resources(spec["initContainers"])
    for key in ("nodeName", "schedulingGates"):
        if spec.get(key):
            slim_spec[key] = spec[key]
    slim_status = {
        k: status[k] for k in ("phase", "podIP", "message", "reason", "conditions") if k in status
    }
    for key in ("initContainerStatuses", "containerStatuses"):  # init: the store's owner step
        if status.get(key):
            slim_status[key] = [
                {
                    "name": c.get("name"),
                    "state": {
                        k: v for k, v in (c.get("state") or {}).items() if k != "running"
                    },  # terminated: how it failed; waiting: why it cannot start
                }
                for c in status[key]
            ]
    return {"metadata": slim_meta, "spec": slim_spec, "status": slim_status}


@dataclass(slots=True)
class Claimed:
    """One released pod not bound yet: whose it is and what it will take."""

    task: tuple[str, str]
    claim: gang.Claim
    reserved: float | None = None
    """When the shell reserved it (monotonic); None once the watch shows the pod."""
    shape: str = ""
    """``claim.shape()``, computed once: claims of pods alike are counted as one group."""

    @classmethod
    def of(cls, task: tuple[str, str], claim: gang.Claim, reserved: float | None) -> Claimed:
        """A claim with its shape."""
        return cls(task, claim, reserved, claim.shape())


@dataclass(slots=True)
class Expectations:
    """Pods created/deleted by us and not yet seen so by the watch."""

    created: dict[str, tuple[Body, float]] = field(default_factory=dict)
    deleted: dict[str, float] = field(default_factory=dict)
    """Keyed by pod uid: the next pod of the same name is a different pod."""


class Runtime:
    """Caches, the work queue and the per-object memory of one operator process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.queue = queueing.WorkQueue()
        # ValidatorSets get their own queue and workers: a thousand tasks polling
        # progress must never starve the status of the set they all depend on.
        self.vset_queue = queueing.WorkQueue()
        self.progress: dict[tuple[str, str], tuple[float, dict[str, Any] | None]] = {}
        self.tasks: dict[tuple[str, str], Body] = {}
        self.vsets: dict[tuple[str, str], Body] = {}
        self.task_pods: dict[tuple[str, str], dict[str, Body]] = {}
        self.vset_pods: dict[tuple[str, str], dict[str, Body]] = {}
        self.nodes: dict[str, gang.NodeInfo] = {}
        self.secret_keys: dict[tuple[str, str], frozenset[str]] = {}
        self.miner_addresses: dict[tuple[str, str], dict[int, str]] = {}
        """Per Secret: node rank -> the address of its ``miner-<rank>.key`` (valid keys only)."""
        self.secret_versions: dict[tuple[str, str], str] = {}
        self.vset_applied: dict[tuple[str, str], tuple[int, str]] = {}
        self.vset_applied_at: dict[tuple[str, str], float] = {}
        """When the children were last applied (monotonic): re-applied to repair them."""
        self.pod_usage: dict[tuple[str, str], tuple[str, dict[str, int]]] = {}
        self.node_used: dict[str, dict[str, int]] = {}
        self.expect: dict[tuple[str, str], Expectations] = {}
        self.claims: dict[tuple[str, str], Claimed] = {}
        """By (namespace, pod name): released trainer pods not bound yet."""
        self.rejections: dict[tuple[str, str], tuple[str, str]] = {}
        """By task: (its uid, why) once the API server refused its pods for their spec."""
        self.stakes = stakes.Gate(config)
        """Miners' stakes checked at admission, and the backoff of the tasks still waiting."""
        self.active = True
        self.primed = False

    # -- watch feeds ---------------------------------------------------------------
    def _store(self, cache: dict[tuple[str, str], Body], body: Body, deleted: bool) -> bool:
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        if deleted:
            cache.pop(key, None)
            return True
        old = cache.get(key)
        if (
            old is not None
            and old["metadata"].get("uid") == meta.get("uid")
            and _rv(body) < _rv(old)
        ):
            return False  # older than what we wrote ourselves
        cache[key] = body
        return True

    def observe_task(self, body: Body, deleted: bool) -> None:
        """A TrainingTask changed."""
        meta = body["metadata"]
        key: Key = (TASK, meta["namespace"], meta["name"])
        self._store(self.tasks, body, deleted)
        if deleted:
            self.queue.forget(key)
            self.expect.pop(key[1:], None)
            self.progress.pop(key[1:], None)
            self.rejections.pop(key[1:], None)
            self.stakes.forget(key[1:])
            for pkey in [k for k, c in self.claims.items() if c.task == key[1:]]:
                del self.claims[pkey]
        else:
            self.queue.add(key)

    def observe_vset(self, body: Body, deleted: bool) -> None:
        """A ValidatorSet changed: reconcile it and every task waiting on it."""
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        old = self.vsets.get((ns, name))
        self._store(self.vsets, body, deleted)
        if deleted:
            self.vset_queue.forget((VSET, ns, name))
            self.vset_applied.pop((ns, name), None)
            self.vset_applied_at.pop((ns, name), None)
        else:
            self.vset_queue.add((VSET, ns, name))
        old_phase = ((old or {}).get("status") or {}).get("phase")
        if deleted or old_phase != (body.get("status") or {}).get("phase"):
            for (tns, tname), task in self.tasks.items():
                if (
                    tns == ns
                    and ((task.get("spec") or {}).get("validatorSetRef") or {}).get("name") == name
                ):
                    self.queue.add((TASK, tns, tname))

    def _account(self, pkey: tuple[str, str], body: Body, deleted: bool) -> bool:
        """Move a pod's requests to its node's usage (or off it); True when it
        held room before and holds none now (gated gangs may fit)."""
        old = self.pod_usage.pop(pkey, None)
        if old is not None:
            into = self.node_used.get(old[0], {})
            for k, v in old[1].items():
                into[k] = into.get(k, 0) - v
        if not deleted and gang.is_active(body):
            node = body["spec"]["nodeName"]
            req = gang.pod_requests(body)
            req["pods"] = 1
            self.pod_usage[pkey] = (node, req)
            into = self.node_used.setdefault(node, {})
            for k, v in req.items():
                into[k] = into.get(k, 0) + v
            return False
        return old is not None

    def observe_pod(self, body: Body, deleted: bool) -> None:
        """Any pod changed: account its node usage; wake its task or ValidatorSet."""
        full, body = body, slim_pod(body)
        meta = body["metadata"]
        ns, name = meta["namespace"], meta["name"]
        pkey = (ns, name)
        freed = self._account(pkey, body, deleted)
        labels = meta.get("labels") or {}
        if labels.get(names.LABEL_MANAGED_BY) != names.MANAGER:
            if freed:
                self._wake_waiting(ns)  # capacity freed: gated gangs may fit now
            return
        if names.LABEL_TASK in labels:
            tkey = (ns, labels[names.LABEL_TASK])
            self._claim(tkey, pkey, full, deleted)
            pods = self.task_pods.setdefault(tkey, {})
            exp = self.expect.get(tkey)
            if deleted:
                pods.pop(name, None)
                if exp:
                    exp.deleted.pop(meta.get("uid", ""), None)
            else:
                self.put_pod(pods, body)
                if exp:
                    exp.created.pop(name, None)
            self.queue.add((TASK, *tkey))
            if freed:
                self._wake_waiting(ns)
        elif names.LABEL_VSET in labels:
            vkey = (ns, labels[names.LABEL_VSET])
            vpods = self.vset_pods.setdefault(vkey, {})
            if deleted:
                vpods.pop(name, None)
            else:
                self.put_pod(vpods, body)
            self.vset_queue.add((VSET, *vkey))

    def _claim(
        self, tkey: tuple[str, str], pkey: tuple[str, str], pod: Body, deleted: bool
    ) -> None:
        """Track a trainer pod's claim: held from its release until it binds or goes."""
        spec = pod.get("spec") or {}
        if not deleted and gang.awaits_placement(pod):
            self.claims[pkey] = Claimed.of(tkey, gang.claim_of(pod), None)
        elif deleted or not spec.get("schedulingGates"):
            # Bound, finished, leaving or gone (a gated view is older than the
            # release the shell reserved for: it leaves the reservation alone).
            gone = self.claims.pop(pkey, None)
            if gone is not None and not spec.get("nodeName"):
                self._wake_waiting()  # released room came back unused

    def reserve(self, key: tuple[str, str], pods: list[str], claim: gang.Claim) -> None:
        """Hold room for pods about to be created released (or released): from
        the decision on, before the first write, so that no other gang's count
        made meanwhile hands the same room out again."""
        now = time.monotonic()
        for name in pods:
            held = self.claims.get((key[0], name))
            if held is None or held.reserved is not None:  # the watch's word stands
                self.claims[(key[0], name)] = Claimed.of(key, claim, now)

    def unreserve(self, key: tuple[str, str], pods: list[str]) -> None:
        """Drop reservations of pods never created or released (their writes failed),
        unless the watch has shown the pod meanwhile."""
        for name in pods:
            held = self.claims.get((key[0], name))
            if held is not None and held.task == key and held.reserved is not None:
                del self.claims[(key[0], name)]

    def pending(self, exclude: tuple[str, str]) -> list[gang.Claim]:
        """The claims of every gang but ``exclude``'s, pods alike grouped."""
        now = time.monotonic()
        counts: dict[str, int] = {}
        claims: dict[str, gang.Claim] = {}
        for pkey, held in list(self.claims.items()):
            if held.reserved is not None and now - held.reserved > EXPECTATION_TTL:
                del self.claims[pkey]  # the create never showed up: not a claim any more
                continue
            if held.task != exclude:
                counts[held.shape] = counts.get(held.shape, 0) + 1
                claims.setdefault(held.shape, held.claim)
        return [dataclasses.replace(claims[s], count=counts[s]) for s in sorted(counts)]

    def _wake_waiting(self, namespace: str | None = None) -> None:
        """Reconcile tasks waiting for capacity (their gang may fit now)."""
        for (ns, name), task in self.tasks.items():
            if ((task.get("status") or {}).get("phase")) in ("Scheduling", "Pending", None):
                self.queue.add((TASK, ns, name), 0.2)

    # -- node usage from the namespaces kopf does not watch (usage_watching) ---------
    def watches(self, namespace: str) -> bool:
        """Whether kopf's watches cover ``namespace`` (every one in cluster-wide mode)."""
        return not self.config.namespaces or namespace in self.config.namespaces

    def observe_foreign_pod(self, body: Body, deleted: bool) -> None:
        """A pod from the cluster-wide usage watch: only its node usage is kept, and
        only outside the watched namespaces (kopf's feed accounts the pods in them,
        in the same stream as their claims, so a binding pod never drops its claim
        before its usage counts)."""
        meta = body.get("metadata") or {}
        ns, name = meta.get("namespace") or "", meta.get("name") or ""
        if not name or self.watches(ns):
            return
        if self._account((ns, name), body, deleted):
            self._wake_waiting()  # GPUs freed outside: gated gangs may fit now

    def resync_foreign_pods(self, pods: list[Body]) -> None:
        """A fresh cluster-wide listing: account every pod in it, and drop the pods
        outside the watched namespaces that it no longer shows (they finished or
        went while no watch ran)."""
        seen = set()
        for pod in pods:
            meta = pod.get("metadata") or {}
            seen.add((meta.get("namespace") or "", meta.get("name") or ""))
            self.observe_foreign_pod(pod, False)
        gone = [k for k in self.pod_usage if k not in seen and not self.watches(k[0])]
        for pkey in gone:
            if self._account(pkey, {}, True):
                self._wake_waiting()

    def observe_node(self, body: Body, deleted: bool) -> None:
        """A Node changed."""
        name = body["metadata"]["name"]
        before = self.nodes.get(name)
        if deleted:
            self.nodes.pop(name, None)
        else:
            self.nodes[name] = gang.node_info(body)
        if before != self.nodes.get(name):
            self._wake_waiting()

    def observe_secret(self, body: Body, deleted: bool) -> None:
        """A Secret changed: keep only the names of its keys."""
        meta = body["metadata"]
        key = (meta["namespace"], meta["name"])
        if deleted:
            self.secret_keys.pop(key, None)
            self.secret_versions.pop(key, None)
            self.miner_addresses.pop(key, None)
        else:
            self.secret_versions[key] = str(meta.get("resourceVersion", ""))
            self.secret_keys[key] = frozenset((body.get("data") or {}).keys()) | frozenset(
                (body.get("stringData") or {}).keys()
            )
            self.miner_addresses[key] = _miner_addresses(body)
        ns = meta["namespace"]
        for (tns, tname), task in self.tasks.items():
            if (
                tns == ns
                and ((task.get("spec") or {}).get("minerKeysSecretRef") or {}).get("name")
                == meta["name"]
            ):
                self.queue.add((TASK, tns, tname))
        for (vns, vname), vset in self.vsets.items():
            spec = vset.get("spec") or {}
            refs = (spec.get("keysSecretRef"), (spec.get("chain") or {}).get("rpcSecretRef"))
            if vns == ns and meta["name"] in {(r or {}).get("name") for r in refs}:
                self.vset_queue.add((VSET, vns, vname))

    @staticmethod
    def put_pod(pods: dict[str, Body], body: Body) -> None:
        """Store a pod unless we already hold a newer version of the same one."""
        name = body["metadata"]["name"]
        old = pods.get(name)
        if (
            old is not None
            and old["metadata"].get("uid") == body["metadata"].get("uid")
            and _rv(body) < _rv(old)
        ):
            return
        pods[name] = body

    # -- expectations --------------------------------------------------------------
    def expected_pods(self, key: tuple[str, str]) -> dict[str, Body]:
        """The task's pods as the watch shows them, corrected by our own recent writes."""
        pods = dict(self.task_pods.get(key, {}))
        exp = self.expect.get(key)
        if exp is None:
            return pods
        now = time.monotonic()
        for name, (body, at) in list(exp.created.items()):
            if now - at > EXPECTATION_TTL:
                del exp.created[name]
            elif name not in pods:
                pods[name] = body
        for uid, at in list(exp.deleted.items()):
            if now - at > EXPECTATION_TTL:
                del exp.deleted[uid]
                continue
            for name, pod in pods.items():
                if pod["metadata"].get("uid") == uid:
                    meta = dict(pod["metadata"])
                    meta.setdefault("deletionTimestamp", "pending")
                    pods[name] = {**pod, "metadata": meta}
        return pods

    def expect_created(self, key: tuple[str, str], body: Body) -> None:
        """Remember a pod we created."""
        self.expect.setdefault(key, Expectations()).created[body["metadata"]["name"]] = (
            slim_pod(body),
            time.monotonic(),
        )

    def expect_deleted(self, key: tuple[str, str], uid: str) -> None:
        """Remember a pod we deleted (by uid)."""
        if uid:
            self.expect.setdefault(key, Expectations()).deleted[uid] = time.monotonic()


_MINER_ITEM = re.compile(r"miner-(\d{1,4})\.key")


def _miner_addresses(secret: Body) -> dict[int, str]:
    """Rank -> address for each ``miner-<rank>.key`` that holds a usable key (others are
    skipped: the trainer of that rank reports its own key error)."""
    items: dict[str, str] = {}
    for item, value in (secret.get("data") or {}).items():
        try:
            items[item] = base64.b64decode(value).decode()
        except (binascii.Error, ValueError):
            continue
    items.update({k: str(v) for k, v in (secret.get("stringData") or {}).items()})
    out: dict[int, str] = {}
    for item, text in items.items():
        match = _MINER_ITEM.fullmatch(item)
        if match is None:
            continue
        try:
            out[int(match.group(1))] = keys.address_of(text, f"Secret item {item}")
        except errors.KeyLoadError:
            continue
    return out
