"""A running ValidatorSet across its lifecycle: what the operator rolls onto its replicas.

The reconcile runs against an in-memory API (create, get, merge-apply, patch) standing in
for the cluster, with real keys in the keys Secret: what matters is which peers.json
the replicas would be given, and what the set's status says.
"""

from __future__ import annotations

import copy
import json
from typing import Any, cast

import pytest

from pot import keys
from pot.operator import (
    conditions,
    gang,
    kubeapi,
    names,
    phases,
    runtime,
    task_reconciler,
    validators_client,
    vset_reconciler,
)
from pot.operator import config as configuration
from pot.settlement import receipts

from .phases_kit import world

NS, NAME, SECRET = "farm", "v", "keys"


class MemoryKube:
    """Objects by (plural, namespace, name); children keep what the last apply wrote."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.statefulset_patches: list[Any] = []
        self.events: list[dict[str, Any]] = []
        self.calls: set[tuple[str, str, str]] = set()  # (verb, API group, resource)

    def _call(self, verb: str, api_version: str, plural: str) -> None:
        group = api_version.rpartition("/")[0] if "/" in api_version else ""
        self.calls.add((verb, group, plural))

    async def get(self, api_version: str, plural: str, ns: str, name: str) -> dict[str, Any]:
        self._call("get", api_version, plural)
        try:
            return copy.deepcopy(self.objects[(plural, ns, name)])
        except KeyError:
            raise kubeapi.NotFound(404, "NotFound", f'{plural} "{name}" not found') from None

    async def create(self, body: dict[str, Any], plural: str) -> dict[str, Any] | None:
        self._call("create", body["apiVersion"], plural)
        if plural == "events":
            self.events.append(body)
            return body
        key = (plural, body["metadata"]["namespace"], body["metadata"]["name"])
        if key in self.objects:
            return None
        self.objects[key] = copy.deepcopy(body)
        return body

    apply = kubeapi.Client.apply  # the real create-or-merge-patch, over these create and patch

    async def patch(
        self, api_version: str, plural: str, ns: str, name: str, patch: Any, **kw: Any
    ) -> dict[str, Any]:
        self._call("patch", api_version, plural + ("/status" if kw.get("sub") else ""))
        if kw.get("sub") == "status":
            return {"metadata": {"resourceVersion": "9"}, "status": patch["status"]}
        if plural == "statefulsets":
            self.statefulset_patches.append(patch)
            return {}
        self.objects[(plural, ns, name)].update(copy.deepcopy(patch))  # a merge patch, shallow
        return self.objects[(plural, ns, name)]


def secret(items: dict[int, keys.Key], version: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": NS, "resourceVersion": version},
        "stringData": {f"validator-{i}.key": "0x" + k.secret.hex() for i, k in items.items()},
    }


def vset(generation: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": "ValidatorSet",
        "metadata": {
            "name": NAME,
            "namespace": NS,
            "uid": "u-1",
            "generation": generation,
            "resourceVersion": "7",
        },
        "spec": {
            "replicas": 4,
            "chain": {"rpcUrl": "http://chain:8545", "chainId": 1, "contract": "0x" + "1" * 40},
            "keysSecretRef": {"name": SECRET},
            **spec,
        },
    }


@pytest.fixture(autouse=True)
def chain_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(receipts, "chain_id", lambda url, *, timeout: 1)


class World:
    def __init__(self) -> None:
        self.rt = runtime.Runtime(configuration.Config())
        self.kube = MemoryKube()
        self.keys = {i: keys.generate() for i in range(4)}
        self.put_secret(self.keys, "1")

    def put_secret(self, items: dict[int, keys.Key], version: str) -> None:
        body = secret(items, version)
        self.kube.objects[("secrets", NS, SECRET)] = body
        self.rt.observe_secret(body, False)

    def peers(self) -> dict[str, Any]:
        cm = self.kube.objects[("configmaps", NS, names.vset_config(NAME))]
        return dict(json.loads(cm["data"]["peers.json"]))

    async def reconcile(self, body: dict[str, Any]) -> dict[str, Any]:
        self.rt.vsets[(NS, NAME)] = body
        await vset_reconciler.reconcile(
            self.rt,
            cast(kubeapi.Client, self.kube),
            cast(validators_client.Client, None),
            NS,
            NAME,
        )
        return dict(self.rt.vsets[(NS, NAME)].get("status") or {})


async def test_a_new_key_in_the_secret_is_not_rolled_onto_a_running_set() -> None:
    """A key changed in the Secret gave a new peers.json that the StatefulSet rolled onto
    the replicas one at a time: the new replica and the old ones disagreed on its key (and
    the contract still knew the old address), so the set split silently."""
    w = World()
    await w.reconcile(vset())
    before = w.peers()
    assert [r["address"] for r in before["replicas"]] == [w.keys[i].address for i in range(4)]

    w.put_secret({**w.keys, 2: keys.generate()}, "2")
    status = await w.reconcile(vset())
    assert w.peers() == before, "the replicas' peers.json must stay the running set's"
    assert w.kube.statefulset_patches == []
    ready = conditions.find(status.get("conditions"), conditions.READY)
    assert ready is not None and ready["reason"] == "MembershipChanged"
    assert f'Secret "{SECRET}" item validator-2.key' in status["message"]
    assert "0x" + w.keys[2].secret.hex() not in repr(status)

    # Put back, it is applied again as before.
    w.put_secret(w.keys, "3")
    status = await w.reconcile(vset())
    ready = conditions.find(status.get("conditions"), conditions.READY)
    assert ready is not None and ready["reason"] != "MembershipChanged"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"replicas": 7}, "spec.replicas 4 -> 7"),
        ({"stakes": ["1", "2", "3", "4"]}, "spec.stakes"),
        (
            {"chain": {"rpcUrl": "http://chain:8545", "chainId": 1, "contract": "0x" + "2" * 40}},
            "spec.chain.contract",
        ),
    ],
)
async def test_a_spec_that_changes_the_set_is_refused_without_the_crd_rules(
    change: dict[str, Any], named: str
) -> None:
    """A cluster that still runs an older CRD lets such an edit through: the operator
    refuses it too, and leaves the replicas' peers.json as it was."""
    w = World()
    w.put_secret({i: keys.generate() for i in range(7)} | w.keys, "1")
    await w.reconcile(vset())
    before = w.peers()
    status = await w.reconcile(vset(generation=2, **change))
    assert w.peers() == before
    assert w.kube.statefulset_patches == []
    assert named in status["message"] and "create a new ValidatorSet" in status["message"]

    # Tuning is not membership: it rolls out.
    status = await w.reconcile(vset(generation=3, pbft={"batchSize": 10}))
    assert w.peers()["pbft"] == {"batchSize": 10}
    assert "MembershipChanged" not in repr(status)


# ---------------------------------------------------------------- the set deleted under a task


def trainer_pods(phase: str) -> list[phases.PodView]:
    return [
        phases.PodView(
            name=f"mlp-demo-node-{r}", rank=r, attempt=0, phase=phase, gated=False, node="rig-0"
        )
        for r in range(2)
    ]


@pytest.mark.parametrize("phase", ["Scheduling", "Training"])
def test_a_task_still_training_fails_when_its_set_is_deleted(
    make_example: Any, make_node: Any, phase: str
) -> None:
    """Deleting the set took its replicas, and with their claims the task's registration:
    the gang trained on, for nothing, and the status never said why."""
    task = make_example("task.yaml")
    task["status"] = {"phase": phase, "reason": "GangRunning"}
    nodes = [gang.node_info(make_node("rig-0"))]
    plan = phases.decide(world(task, nodes, vset=None, pods=trainer_pods("Running")))
    assert (plan.status["phase"], plan.status["reason"]) == ("Failed", "ValidatorSetNotFound")
    assert 'ValidatorSet "vset" (spec.validatorSetRef.name) was deleted' in plan.status["message"]
    assert len(plan.delete) == 2, "no member of the gang keeps training"
    assert [e.reason for e in plan.events] == ["ValidatorSetNotFound"]


@pytest.mark.parametrize("phase", ["Verifying", "Settling"])
def test_a_trained_task_says_its_set_is_gone(make_example: Any, phase: str) -> None:
    """A trained task is never failed (an allocation may be on chain), but it says why it
    will not move on, instead of waiting for verdicts in silence."""
    task = make_example("task.yaml")
    task["status"] = {"phase": phase, "reason": "TrainingComplete"}
    plan = phases.decide(world(task, [], vset=None, pods=trainer_pods("Succeeded")))
    assert (plan.status["phase"], plan.status["reason"]) == (phase, "ValidatorSetNotFound")
    assert "cannot be verified or settled" in plan.status["message"]
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "ValidatorSetNotFound")]
    assert not plan.delete


def test_a_set_being_deleted_is_gone_for_its_tasks(make_example: Any) -> None:
    """The task reconciler hands the machine no set once the set has a deletionTimestamp."""
    body = make_example("validatorset.yaml")
    assert not task_reconciler.deleting(body)
    body["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert task_reconciler.deleting(body)


# ---------------------------------------------------------------- names taken by others


@pytest.mark.parametrize(
    ("kind", "plural", "name", "owner"),
    [
        ("Service", "services", "v-peers", ("ValidatorSet", "v-peers")),  # another set's client
        ("Service", "services", "v", ("TrainingTask", "v")),  # a task's rendezvous Service
    ],
)
async def test_a_child_name_held_by_another_object_is_not_taken_over(
    kind: str, plural: str, name: str, owner: tuple[str, str]
) -> None:
    """Set "v" patched whatever held its children's names: the client Service of a set
    "v-peers", or the headless Service of a task "v", had its selector and ports rewritten
    to this set's replicas (and its owner replaced), breaking the other's DNS."""
    w = World()
    theirs = {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": NS,
            "ownerReferences": [
                {"kind": owner[0], "name": owner[1], "uid": "u-other", "controller": True}
            ],
        },
        "spec": {"selector": {"pot.dev/task": "v"}, "clusterIP": "None"},
    }
    w.kube.objects[(plural, NS, name)] = copy.deepcopy(theirs)
    status = await w.reconcile(vset())
    assert w.kube.objects[(plural, NS, name)] == theirs
    ready = conditions.find(status.get("conditions"), conditions.READY)
    assert ready is not None and ready["reason"] == "NameConflict"
    assert f'{kind} "{name}"' in status["message"]
    assert f'{owner[0]} "{owner[1]}"' in status["message"]
    assert status["phase"] == "Pending", "it may clear: the other object may go"


async def test_a_missing_rpc_secret_is_named_before_any_replica_is_made() -> None:
    """spec.chain.rpcSecretRef naming no Secret, or no item in it: every replica pod failed
    to start (its sidecar's env comes from that item) and the set said only "0 of 4 replicas
    ready"."""
    w = World()
    ref = {"name": "chain-rpc", "key": "url"}
    chain = {"rpcSecretRef": ref, "chainId": 1, "contract": "0x" + "1" * 40}
    status = await w.reconcile(vset(chain=chain))
    assert status["phase"] == "Pending"
    assert status["message"].startswith('Secret "chain-rpc" (spec.chain.rpcSecretRef) not found')
    assert ("statefulsets", NS, NAME) not in w.kube.objects
    rpc_secret = {"metadata": {"name": "chain-rpc", "namespace": NS, "resourceVersion": "1"}}
    w.rt.vsets[(NS, NAME)] = vset(chain=chain)  # (MemoryKube's status write keeps no spec)
    w.rt.vset_queue.forget((runtime.VSET, NS, NAME))
    w.rt.observe_secret({**rpc_secret, "data": {"uri": "aHR0cDovL3g="}}, False)
    assert len(w.rt.vset_queue) == 1  # the Secret wakes the set
    status = await w.reconcile(vset(chain=chain))
    ready = conditions.find(status.get("conditions"), conditions.READY)
    assert ready is not None and ready["reason"] == "RpcSecretKeyMissing"
    assert "no item 'url' (spec.chain.rpcSecretRef.key)" in status["message"]
    w.rt.observe_secret({**rpc_secret, "data": {"url": "aHR0cDovL3g="}}, False)
    status = await w.reconcile(vset(chain=chain))
    assert ("statefulsets", NS, NAME) in w.kube.objects
    assert "aHR0cDovL3g=" not in repr(status) and "http://x" not in repr(status)


def test_every_call_these_reconciles_make_is_in_the_operators_rbac() -> None:
    """The chart grants exactly the verbs the code uses (``operator/rbac.py``). A reconcile
    that began reading its children (``get``) passed every test here and failed only in
    the demo, where the local cluster enforces RBAC: 403, and no set became Ready."""
    from .test_rbac_rules import USED, allowed

    seen: set[tuple[str, str, str]] = set()

    async def run() -> None:
        w = World()
        await w.reconcile(vset())
        await w.reconcile(vset(2, image="pot-validator:2"))  # children exist: read, patched
        w.put_secret({**w.keys, 2: keys.generate()}, "2")
        await w.reconcile(vset())
        seen.update(w.kube.calls)

    import asyncio

    asyncio.run(run())
    assert ("get", "", "configmaps") in seen and ("patch", "apps", "statefulsets") in seen
    for verb, group, resource in sorted(seen):
        assert (verb, group, resource) in USED, (verb, group, resource)
        assert allowed(verb, group, resource, name="" if verb == "create" else "x")
