"""A running ValidatorSet across its lifecycle: what the operator rolls onto its replicas.

The reconcile runs against an in-memory API (create, get, merge-apply, patch) standing in
for the cluster, with real keys in the keys Secret: what matters is which peers.json
the replicas would be given, and what the set's status says.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any, cast

import pytest

from pot import keys
from pot.localcluster import patching
from pot.operator import (
    builders_validators,
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
KEPT = names.vset_keys(NAME)  # "v-accepted-keys"


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
        live = self.objects[(plural, ns, name)]
        if plural == "statefulsets":
            self.statefulset_patches.append(patch)
            self.objects[(plural, ns, name)] = patching.json_patch(live, copy.deepcopy(patch))
            return {}
        if live.get("immutable") and {"data", "stringData"} & set(patch):
            raise kubeapi.ApiError(422, "Invalid", "data: field is immutable")  # as the API
        live.update(copy.deepcopy(patch))  # a merge patch, shallow
        return live


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
        self.reconcile_client: Any = None  # no replica pods unless a test adds them

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
            cast(validators_client.Client, self.reconcile_client),
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


# ---------------------------------------------------------------- the accepted keys


def key_a_restarting_replica_reads(w: World, ordinal: int) -> str:
    """The key replica ``ordinal`` copies when its pod starts now: the Secret its init
    container's keys volume names in the live StatefulSet template, as it is now."""
    pod = w.kube.objects[("statefulsets", NS, NAME)]["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (mount,) = [
        m for m in init["volumeMounts"] if m["mountPath"] == builders_validators.KEYS_SOURCE_DIR
    ]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    body = w.kube.objects[("secrets", NS, volume["secret"]["secretName"])]
    item = f"validator-{ordinal}.key"
    if item in (body.get("data") or {}):
        return base64.b64decode(body["data"][item]).decode()
    return str(body["stringData"][item])


def as_before_the_kept_keys(w: World) -> None:
    """The set as an operator without the kept keys left it: pods mount the user's Secret."""
    del w.kube.objects[("secrets", NS, KEPT)]
    pod = w.kube.objects[("statefulsets", NS, NAME)]["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "keys-source"]
    volume["secret"]["secretName"] = SECRET
    w.rt.vset_applied.clear()


async def test_the_set_keeps_the_keys_it_accepted_in_its_own_immutable_secret() -> None:
    w = World()
    w.kube.objects[("secrets", NS, SECRET)]["stringData"]["notes.txt"] = "not a key"
    await w.reconcile(vset())
    kept = w.kube.objects[("secrets", NS, KEPT)]
    assert kept["immutable"] is True
    assert kept["metadata"]["ownerReferences"] == [
        {
            "apiVersion": names.API_VERSION,
            "kind": "ValidatorSet",
            "name": NAME,
            "uid": "u-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert sorted(kept["data"]) == [f"validator-{i}.key" for i in range(4)], "keys only"
    for i in range(4):
        assert key_a_restarting_replica_reads(w, i) == "0x" + w.keys[i].secret.hex()
    # Applied again (a new image): the kept keys are neither written nor taken anew.
    await w.reconcile(vset(2, image="pot-validator:2"))
    assert w.kube.objects[("secrets", NS, KEPT)] == kept
    assert ("patch", "", "secrets") not in w.kube.calls


async def test_a_replica_that_restarts_after_a_refused_key_change_keeps_its_accepted_key() -> None:
    """The replicas mounted the user's keys Secret: after a refused key change, a replica
    whose pod restarted copied the new key, which peers.json did not know, and crash-looped
    until the old key was put back; more than f such restarts stopped the set."""
    w = World()
    await w.reconcile(vset())
    kept = copy.deepcopy(w.kube.objects[("secrets", NS, KEPT)])
    statefulset = copy.deepcopy(w.kube.objects[("statefulsets", NS, NAME)])
    address = w.peers()["replicas"][2]["address"]

    w.put_secret({**w.keys, 2: keys.generate()}, "2")
    status = await w.reconcile(vset())
    ready = conditions.find(status.get("conditions"), conditions.READY)
    assert ready is not None and ready["reason"] == "MembershipChanged"
    assert w.kube.objects[("secrets", NS, KEPT)] == kept
    assert w.kube.objects[("statefulsets", NS, NAME)] == statefulset
    assert w.kube.statefulset_patches == []
    # Replica 2's pod restarts: it starts with the key peers.json knows.
    text = key_a_restarting_replica_reads(w, 2)
    assert text == "0x" + w.keys[2].secret.hex()
    assert keys.from_text(text, "kept").address == address
    assert f'keeps running on the keys it accepted (Secret "{KEPT}")' in status["message"]
    assert "restarts take the new key" not in status["message"]

    # The ConfigMap deleted by hand meanwhile: the kept keys still refuse the new one.
    del w.kube.objects[("configmaps", NS, names.vset_config(NAME))]
    w.rt.vset_applied.clear()
    status = await w.reconcile(vset())
    assert f'Secret "{SECRET}" item validator-2.key (another key)' in status["message"]
    assert ("configmaps", NS, names.vset_config(NAME)) not in w.kube.objects
    assert w.kube.statefulset_patches == []

    w.put_secret(w.keys, "3")
    status = await w.reconcile(vset())
    assert "MembershipChanged" not in repr(status)
    assert w.peers()["replicas"][2]["address"] == address


async def test_a_set_from_before_the_kept_keys_gets_them_while_its_keys_match() -> None:
    """Upgrade: the kept keys are taken from the user's Secret only when its keys are
    still the ones in the replicas' peers.json, and only then do the pods mount them."""
    w = World()
    await w.reconcile(vset())
    as_before_the_kept_keys(w)
    await w.reconcile(vset())
    assert ("secrets", NS, KEPT) in w.kube.objects
    assert len(w.kube.statefulset_patches) == 1, "the template now mounts the kept keys"
    assert key_a_restarting_replica_reads(w, 1) == "0x" + w.keys[1].secret.hex()
    pod = w.kube.objects[("statefulsets", NS, NAME)]["spec"]["template"]["spec"]
    assert [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v] == [KEPT]


async def test_a_set_from_before_the_kept_keys_with_a_changed_key_is_refused_as_before() -> None:
    w = World()
    await w.reconcile(vset())
    as_before_the_kept_keys(w)
    statefulset = copy.deepcopy(w.kube.objects[("statefulsets", NS, NAME)])
    w.put_secret({**w.keys, 3: keys.generate()}, "2")
    status = await w.reconcile(vset())
    ready = conditions.find(status.get("conditions"), conditions.READY)
    assert ready is not None and ready["reason"] == "MembershipChanged"
    assert ("secrets", NS, KEPT) not in w.kube.objects, "never the refused keys"
    assert w.kube.objects[("statefulsets", NS, NAME)] == statefulset
    assert f'pods still read Secret "{SECRET}"' in status["message"]
    assert "a replica that restarts takes the new key" in status["message"]
    # The old key back: now the operator keeps them, and the pods mount its copy.
    w.put_secret(w.keys, "3")
    await w.reconcile(vset())
    assert key_a_restarting_replica_reads(w, 3) == "0x" + w.keys[3].secret.hex()
    assert ("secrets", NS, KEPT) in w.kube.objects


async def test_the_kept_keys_name_held_by_another_secret_is_not_taken_over() -> None:
    w = World()
    theirs = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": KEPT, "namespace": NS},
        "data": {"validator-0.key": "eA=="},
    }
    w.kube.objects[("secrets", NS, KEPT)] = copy.deepcopy(theirs)
    status = await w.reconcile(vset())
    assert w.kube.objects[("secrets", NS, KEPT)] == theirs
    ready = conditions.find(status.get("conditions"), conditions.READY)
    assert ready is not None and ready["reason"] == "NameConflict"
    assert f'Secret "{KEPT}" exists in namespace "{NS}"' in status["message"]
    assert ("statefulsets", NS, NAME) not in w.kube.objects


async def test_a_set_re_created_before_its_kept_keys_are_collected_waits_for_them() -> None:
    """Set "v" deleted and created again before the garbage collector took the old one's
    <set>-accepted-keys: the new set was told the name belonged to ValidatorSet "v" and to
    rename itself, though it only had to wait."""
    w = World()
    await w.reconcile(vset())
    old = w.kube.objects[("secrets", NS, KEPT)]
    old["metadata"]["ownerReferences"][0]["uid"] = "u-0"  # the earlier set's
    for key in [k for k in w.kube.objects if k[0] != "secrets"]:
        del w.kube.objects[key]  # its other children already collected
    w.rt.vset_applied.clear()
    status = await w.reconcile(vset())
    assert (status["phase"], status["conditions"][0]["reason"]) == ("Pending", "NameConflict")
    assert "still belongs to an earlier ValidatorSet" in status["message"], status["message"]
    assert "rename" not in status["message"]
    assert ("statefulsets", NS, NAME) not in w.kube.objects
    del w.kube.objects[("secrets", NS, KEPT)]  # collected
    status = await w.reconcile(vset())
    assert w.kube.objects[("secrets", NS, KEPT)]["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert ("statefulsets", NS, NAME) in w.kube.objects


async def test_kept_keys_that_are_not_keys_are_named_not_rolled_out() -> None:
    w = World()
    await w.reconcile(vset())
    bad = w.kube.objects[("secrets", NS, KEPT)]
    bad["data"]["validator-1.key"] = base64.b64encode(b"not a key").decode()
    w.rt.vset_applied.clear()
    status = await w.reconcile(vset(2, image="pot-validator:2"))
    assert status["phase"] == "Pending", "deleting it repairs it"
    assert status["message"].startswith(
        f'Secret "{KEPT}" item validator-1.key: not a secp256k1 private key; delete Secret '
        f'"{KEPT}", and it is copied again from Secret "{SECRET}"'
    )
    assert w.kube.statefulset_patches == []
    del w.kube.objects[("secrets", NS, KEPT)]
    status = await w.reconcile(vset(2, image="pot-validator:2"))
    assert key_a_restarting_replica_reads(w, 1) == "0x" + w.keys[1].secret.hex()
    assert "pot-validator:2" in json.dumps(w.kube.statefulset_patches)


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
        w.rt.observe_secret(w.kube.objects.pop(("secrets", NS, SECRET)), True)
        await w.reconcile(vset())  # on the kept keys
        seen.update(w.kube.calls)

    import asyncio

    asyncio.run(run())
    assert ("get", "", "configmaps") in seen and ("patch", "apps", "statefulsets") in seen
    assert ("create", "", "secrets") in seen  # the kept keys
    for verb, group, resource in sorted(seen):
        assert (verb, group, resource) in USED, (verb, group, resource)
        assert allowed(verb, group, resource, name="" if verb == "create" else "x")
