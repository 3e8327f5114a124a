"""A ValidatorSet's edits reach its StatefulSet exactly, and its chain checks never show a
secret URL. No cluster: the StatefulSet patch is applied with the local cluster's own RFC
6902 implementation, and the reconcile runs against a recording fake of the API client."""

from __future__ import annotations

from typing import Any, cast

import pytest

from pot import errors
from pot.localcluster import patching
from pot.operator import (
    builders_validators,
    kubeapi,
    names,
    runtime,
    validators_client,
    vset_reconciler,
)
from pot.operator import config as configuration
from pot.settlement import receipts

IDS = [builders_validators.Identity("0x" + "1" * 40, "0x04" + "ab" * 64)] * 4
OPERATOR_URL = "https://base-mainnet.g.alchemy.com/v2/OPERATOR-API-KEY"
SET_URL = "https://eth.example:8545/v2/SET-API-KEY?apikey=QUERY-KEY"
SECRETS = ("OPERATOR-API-KEY", "SET-API-KEY", "QUERY-KEY", "/v2/")


def vset(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": names.API_VERSION,
        "kind": "ValidatorSet",
        "metadata": {
            "name": "v",
            "namespace": "farm",
            "uid": "u-1",
            "generation": 1,
            "resourceVersion": "7",
        },
        "spec": {
            "replicas": 4,
            "chain": {"rpcUrl": "http://chain:8545", "chainId": 1, "contract": "0x" + "1" * 40},
            "keysSecretRef": {"name": "keys"},
            **spec,
        },
    }


def statefulset(body: dict[str, Any]) -> dict[str, Any]:
    (sts,) = [
        c
        for c in builders_validators.build_all(body, IDS, configuration.Config())
        if c["kind"] == "StatefulSet"
    ]
    return sts


# ---------------------------------------------------------------- the StatefulSet update

PLACED = {
    "nodeSelector": {"pool": "old-rigs", "zone": "a"},
    "tolerations": [{"key": "gpu", "operator": "Exists"}],
}


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (PLACED, {}),
        (PLACED, {"nodeSelector": {"pool": "old-rigs"}}),
        (PLACED, {"tolerations": [{"key": "gpu", "operator": "Exists"}]}),
        ({}, PLACED),
        ({"resources": {"limits": {"cpu": "2"}}}, {}),
    ],
    ids=["drop-both", "drop-one-selector-key", "drop-selector", "add-both", "drop-resources"],
)
def test_the_live_template_becomes_the_built_one(
    before: dict[str, Any], after: dict[str, Any]
) -> None:
    live = statefulset(vset(**before))
    live["metadata"]["labels"]["team"] = "farm-ops"  # someone else's label
    live["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"  # a server default
    want = statefulset(vset(**after))
    patched = patching.json_patch(live, vset_reconciler.statefulset_update(want))
    assert patched["spec"]["template"] == want["spec"]["template"]
    assert patched["spec"]["replicas"] == want["spec"]["replicas"]
    pod = patched["spec"]["template"]["spec"]
    for key in ("nodeSelector", "tolerations"):
        assert pod.get(key) == after.get(key)
    assert patched["metadata"]["labels"] == {**want["metadata"]["labels"], "team": "farm-ops"}
    # Fields fixed at creation are not touched.
    assert patched["spec"]["volumeClaimTemplates"] == live["spec"]["volumeClaimTemplates"]


def test_the_update_names_only_fields_a_statefulset_may_change() -> None:
    ops = vset_reconciler.statefulset_update(statefulset(vset()))
    assert {op["op"] for op in ops} == {"add"}
    spec_paths = {op["path"] for op in ops if op["path"].startswith("/spec/")}
    assert spec_paths == {
        "/spec/replicas",
        "/spec/template",
        "/spec/persistentVolumeClaimRetentionPolicy",
    }
    # Label keys are JSON pointers: "app.kubernetes.io/name" -> "app.kubernetes.io~1name".
    assert "/metadata/labels/app.kubernetes.io~1name" in {op["path"] for op in ops}


# ---------------------------------------------------------------- chain checks


@pytest.fixture
def chain_answers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """receipts.chain_id answering chain id 1; the URLs asked, in order."""
    asked: list[str] = []

    def chain_id(url: str, *, timeout: float) -> int:
        asked.append(url)
        return 1

    monkeypatch.setattr(receipts, "chain_id", chain_id)
    return asked


def rt() -> runtime.Runtime:
    return runtime.Runtime(configuration.Config(chain_rpc_url=OPERATOR_URL))


SECRET_CHAIN = {"rpcSecretRef": {"name": "rpc", "key": "url"}, "chainId": 8453}


async def test_a_secret_rpc_url_is_not_replaced_by_the_operators(
    chain_answers: list[str],
) -> None:
    status, reason, message = await vset_reconciler.chain_condition(rt(), {"chain": SECRET_CHAIN})
    assert (status, reason) == ("Unknown", "RpcUrlInSecret")
    assert chain_answers == [], "the operator's own endpoint is another chain: never asked"
    assert 'Secret "rpc"' in message and "settlement sidecars" in message
    assert not any(s in message for s in SECRETS)


async def test_chain_messages_name_the_host_never_the_key(
    monkeypatch: pytest.MonkeyPatch, chain_answers: list[str]
) -> None:
    spec = {"chain": {"rpcUrl": SET_URL, "chainId": 8453}}
    status, reason, message = await vset_reconciler.chain_condition(rt(), spec)
    assert (status, reason) == ("False", "ChainIdMismatch")
    assert chain_answers == [SET_URL]
    assert "https://eth.example:8545/…" in message and "8453" in message
    assert not any(s in message for s in SECRETS)

    spec["chain"]["chainId"] = 1
    status, reason, message = await vset_reconciler.chain_condition(rt(), spec)
    assert (status, reason) == ("True", "ChainAnswers")
    assert not any(s in message for s in SECRETS)

    def down(url: str, *, timeout: float) -> int:
        raise errors.ChainUnreachable(f"chain RPC {url} unreachable: timed out")

    monkeypatch.setattr(receipts, "chain_id", down)
    status, reason, message = await vset_reconciler.chain_condition(rt(), spec)
    assert (status, reason) == ("False", "ChainUnreachable")
    assert "https://eth.example:8545/…" in message and "timed out" in message
    assert not any(s in message for s in SECRETS)


async def test_without_any_url_the_condition_says_so(chain_answers: list[str]) -> None:
    plain = runtime.Runtime(configuration.Config())
    status, reason, message = await vset_reconciler.chain_condition(plain, {"chain": {}})
    assert (status, reason) == ("Unknown", "RpcUrlMissing")
    assert "POT_CHAIN_RPC_URL" in message and chain_answers == []


class RecordingKube:
    """The two writes a reconcile of an applied ValidatorSet makes: status and Events."""

    def __init__(self) -> None:
        self.patches: list[Any] = []
        self.created: list[dict[str, Any]] = []

    async def patch(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.patches.append(args[4])
        return {"metadata": {"resourceVersion": "8"}, "status": args[4]["status"]}

    async def create(self, body: dict[str, Any], plural: str) -> dict[str, Any]:
        self.created.append(body)
        return body


async def test_neither_status_nor_events_carry_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def down(url: str, *, timeout: float) -> int:
        raise errors.ChainUnreachable(f"chain RPC {url} unreachable: connection refused")

    monkeypatch.setattr(receipts, "chain_id", down)
    for chain in (SECRET_CHAIN, {"rpcUrl": SET_URL, "chainId": 8453}):
        state = rt()
        body = vset(chain=chain)
        key = ("farm", "v")
        state.vsets[key] = body
        state.secret_keys[("farm", "keys")] = frozenset(f"validator-{i}.key" for i in range(4))
        state.vset_applied[key] = (1, "")  # children applied: the reconcile only reports
        kube = RecordingKube()
        await vset_reconciler.reconcile(
            state, cast(kubeapi.Client, kube), cast(validators_client.Client, None), "farm", "v"
        )
        written = repr(kube.patches) + repr(kube.created)
        assert kube.patches, "a status was written"
        assert not any(s in written for s in SECRETS), written
        reasons = {e["reason"] for e in kube.created}
        assert ("ChainUnreachable" in reasons) == ("rpcUrl" in chain)


# ---------------------------------------------------------------- children repaired


async def test_children_deleted_by_hand_or_a_recreated_set_are_applied_again(
    monkeypatch: pytest.MonkeyPatch, chain_answers: list[str]
) -> None:
    """Children are not watched: a StatefulSet deleted by hand (every replica gone)
    stayed gone, and a set deleted and re-created under its name (generation 1
    again, the same keys Secret) matched the old one's stamp and got no children."""
    applied: list[str] = []

    async def apply_children(rt: Any, kube: Any, body: dict[str, Any]) -> None:
        applied.append(body["metadata"]["uid"])

    monkeypatch.setattr(vset_reconciler, "apply_children", apply_children)
    state, key = rt(), ("farm", "v")
    state.secret_keys[("farm", "keys")] = frozenset(f"validator-{i}.key" for i in range(4))

    async def reconcile() -> None:
        state.vsets[key] = current[0]  # RecordingKube's status answer is not a whole body
        await vset_reconciler.reconcile(
            state, cast(kubeapi.Client, RecordingKube()), cast(validators_client.Client, None), *key
        )

    current = [vset()]
    state.observe_vset(current[0], False)
    await reconcile()
    await reconcile()  # nothing changed, just applied: not again
    assert applied == ["u-1"]
    # No replica pod for longer than REPAIR_AFTER: the StatefulSet is re-applied.
    state.vset_applied_at[key] -= vset_reconciler.REPAIR_AFTER + 1
    await reconcile()
    assert applied == ["u-1", "u-1"]
    # Deleted and re-created under the same name.
    state.observe_vset(vset(), True)
    again = vset()
    again["metadata"]["uid"] = "u-2"
    state.observe_vset(again, False)
    current[0] = again
    await reconcile()
    assert applied == ["u-1", "u-1", "u-2"]
