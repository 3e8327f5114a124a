"""The CRDs teach and guard the API: examples validate, bad specs name their field.

Validation runs through `pot.schemas`, the same code the embedded API server
and the operator use, including the CEL `x-kubernetes-validations` rules.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pot import schemas

Doc = dict[str, Any]


def load_crd(root: Path, name: str) -> Doc:
    doc: Doc = yaml.safe_load((root / "crds" / f"{name}.yaml").read_text())
    return doc


def example_docs(root: Path) -> Iterator[tuple[str, Doc]]:
    for path in sorted((root / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("apiVersion") == "pot.dev/v1alpha1":
                yield f"{path.name}:{doc['metadata']['name']}", doc


@pytest.fixture(scope="module")
def crd_schemas(repo_root: Path) -> dict[str, schemas.Schema]:
    return {
        "TrainingTask": schemas.crd_schema(load_crd(repo_root, "trainingtask"), "v1alpha1"),
        "ValidatorSet": schemas.crd_schema(load_crd(repo_root, "validatorset"), "v1alpha1"),
    }


def walk(schema: schemas.Schema, path: str = "") -> Iterator[tuple[str, schemas.Schema]]:
    yield path, schema
    for key, child in schema.get("properties", {}).items():
        yield from walk(child, f"{path}.{key}" if path else key)
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")


@pytest.mark.parametrize("name", ["trainingtask", "validatorset"])
def test_crd_shape(repo_root: Path, name: str) -> None:
    crd = load_crd(repo_root, name)
    spec = crd["spec"]
    assert spec["group"] == "pot.dev"
    assert spec["names"]["categories"] == ["pot"]
    assert spec["names"]["shortNames"] == [{"trainingtask": "tt", "validatorset": "vset"}[name]]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1"
    assert version["subresources"]["status"] == {}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    expected = {
        "trainingtask": ["Phase", "Progress", "Nodes", "ValidatorSet", "Age"],
        "validatorset": ["Replicas", "Ready", "View", "Primary", "Age"],
    }[name]
    assert columns == expected


@pytest.mark.parametrize("name", ["trainingtask", "validatorset"])
def test_every_field_is_described(repo_root: Path, name: str) -> None:
    """So `kubectl explain` teaches the API: no field without a description."""
    schema = schemas.crd_schema(load_crd(repo_root, name), "v1alpha1")
    undescribed = [
        path
        for path, node in walk(schema)
        if path and path != "metadata" and not path.endswith("[]") and not node.get("description")
    ]
    assert undescribed == []


def test_examples_validate(repo_root: Path, crd_schemas: dict[str, schemas.Schema]) -> None:
    seen = []
    for label, doc in example_docs(repo_root):
        cleaned, causes = schemas.admit(crd_schemas[doc["kind"]], doc)
        assert causes == [], f"{label}: {[str(c) for c in causes]}"
        assert cleaned["spec"] == schemas.default(crd_schemas[doc["kind"]], cleaned)["spec"]
        seen.append(label)
    assert {"task.yaml:mlp-demo", "task-gpu.yaml:tiny-gpt-farm", "validatorset.yaml:vset"} <= set(
        seen
    )


def test_defaults_fill_in(repo_root: Path, crd_schemas: dict[str, schemas.Schema]) -> None:
    doc = next(d for label, d in example_docs(repo_root) if label == "task.yaml:mlp-demo")
    minimal = copy.deepcopy(doc)
    del minimal["spec"]["proof"]["tolerance"]
    del minimal["spec"]["runPolicy"]
    minimal["spec"]["runPolicy"] = {}
    cleaned, causes = schemas.admit(crd_schemas["TrainingTask"], minimal)
    assert causes == []
    assert cleaned["spec"]["runPolicy"]["backoffLimit"] == 3
    assert cleaned["spec"]["proof"]["deterministic"] is False
    assert "tolerance" not in cleaned["spec"]["proof"]  # defaults only under present parents


def test_unknown_fields_pruned(crd_schemas: dict[str, schemas.Schema], repo_root: Path) -> None:
    doc = next(d for label, d in example_docs(repo_root) if label == "task.yaml:mlp-demo")
    doc = copy.deepcopy(doc)
    doc["spec"]["bogus"] = 1
    doc["spec"]["model"]["config"] = {"anything": {"goes": True}}
    cleaned, causes = schemas.admit(crd_schemas["TrainingTask"], doc)
    assert causes == []
    assert "bogus" not in cleaned["spec"]
    assert cleaned["spec"]["model"]["config"] == {"anything": {"goes": True}}


def setter(path: str, value: Any) -> Callable[[Doc], None]:
    def apply(doc: Doc) -> None:
        *parents, last = path.split(".")
        node = doc
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value

    return apply


def deleter(path: str) -> Callable[[Doc], None]:
    def apply(doc: Doc) -> None:
        *parents, last = path.split(".")
        node = doc
        for p in parents:
            node = node[p]
        del node[last]

    return apply


# (kind, what is wrong, mutation, field path the error must name, message fragment)
BAD_SPECS: list[tuple[str, str, Callable[[Doc], None], str, str]] = [
    ("TrainingTask", "no spec", deleter("spec"), "spec", "Required value"),
    ("TrainingTask", "missing model", deleter("spec.model"), "spec.model", "Required value"),
    (
        "TrainingTask",
        "unknown built-in model",
        setter("spec.model.name", "resnet-9000"),
        "spec.model.name",
        "supported values",
    ),
    (
        "TrainingTask",
        "model name and module",
        setter("spec.model.module", "x.y:build"),
        "spec.model",
        "exactly one of model.name",
    ),
    (
        "TrainingTask",
        "module without image",
        lambda d: d["spec"].update(model={"module": "pkg.mod:build"}),
        "spec.model.image",
        "needs model.image",
    ),
    (
        "TrainingTask",
        "malformed module",
        lambda d: d["spec"].update(model={"module": "no-colon", "image": "x"}),
        "spec.model.module",
        "should match",
    ),
    (
        "TrainingTask",
        "dataset name and cid",
        setter("spec.dataset.cid", "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"),
        "spec.dataset",
        "exactly one of dataset.name",
    ),
    (
        "TrainingTask",
        "dataset url without a cid",
        setter("spec.dataset.url", "https://data.example/train.csv"),
        "spec.dataset.url",
        "dataset.url needs dataset.cid",
    ),
    (
        "TrainingTask",
        "dataset url not http",
        lambda d: d["spec"].update(
            dataset={
                "cid": "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e",
                "url": "file:///etc/passwd",
            }
        ),
        "spec.dataset.url",
        "should match",
    ),
    (
        "TrainingTask",
        "dataset cid not a CID",
        lambda d: d["spec"].update(dataset={"cid": "Qm123"}),
        "spec.dataset.cid",
        "should match",
    ),
    (
        "TrainingTask",
        "zero steps",
        setter("spec.hyperparameters.steps", 0),
        "spec.hyperparameters.steps",
        "greater than or equal to 1",
    ),
    (
        "TrainingTask",
        "negative lr",
        setter("spec.hyperparameters.lr", -0.1),
        "spec.hyperparameters.lr",
        "greater than 0",
    ),
    (
        "TrainingTask",
        "zero lr",
        setter("spec.hyperparameters.lr", 0),
        "spec.hyperparameters.lr",
        "greater than 0",
    ),
    (
        "TrainingTask",
        "unknown optimizer",
        setter("spec.hyperparameters.optimizer", "lion"),
        "spec.hyperparameters.optimizer",
        "supported values",
    ),
    (
        "TrainingTask",
        "steps as string",
        setter("spec.hyperparameters.steps", "200"),
        "spec.hyperparameters.steps",
        "must be of type integer",
    ),
    (
        "TrainingTask",
        "zero nodes",
        setter("spec.resources.nodes", 0),
        "spec.resources.nodes",
        "greater than or equal to 1",
    ),
    (
        "TrainingTask",
        "nccl without GPUs",
        setter("spec.resources.backend", "nccl"),
        "spec.resources.gpusPerNode",
        "GPU task",
    ),
    (
        "TrainingTask",
        "gloo with GPUs",
        setter("spec.resources.gpusPerNode", 4),
        "spec.resources.gpusPerNode",
        "backend gloo",
    ),
    (
        "TrainingTask",
        "too many GPUs per node",
        lambda d: d["spec"]["resources"].update(gpusPerNode=64, backend="nccl"),
        "spec.resources.gpusPerNode",
        "less than or equal to 16",
    ),
    (
        "TrainingTask",
        "segmentSteps zero",
        setter("spec.proof.segmentSteps", 0),
        "spec.proof.segmentSteps",
        "greater than or equal to 1",
    ),
    (
        "TrainingTask",
        "segment longer than training",
        setter("spec.proof.segmentSteps", 1000),
        "spec.proof.segmentSteps",
        "must not exceed",
    ),
    (
        "TrainingTask",
        "zero tolerance",
        setter("spec.proof.tolerance.threshold", 0),
        "spec.proof.tolerance.threshold",
        "greater than 0",
    ),
    (
        "TrainingTask",
        "unknown distance metric",
        setter("spec.proof.tolerance.metric", "l3"),
        "spec.proof.tolerance.metric",
        "supported values",
    ),
    (
        "TrainingTask",
        "sample rate above 1",
        setter("spec.proof.sampleRate", 1.5),
        "spec.proof.sampleRate",
        "less than or equal to 1",
    ),
    (
        "TrainingTask",
        "both sampling modes",
        setter("spec.proof.samplesPerEpoch", 3),
        "spec.proof",
        "at most one of",
    ),
    (
        "TrainingTask",
        "pool not an integer",
        setter("spec.reward.pool", "10 ETH"),
        "spec.reward.pool",
        "should match",
    ),
    (
        "TrainingTask",
        "fee above half",
        setter("spec.reward.validatorFeeBps", 9000),
        "spec.reward.validatorFeeBps",
        "less than or equal to 5000",
    ),
    (
        "TrainingTask",
        "missing validatorSetRef",
        deleter("spec.validatorSetRef"),
        "spec.validatorSetRef",
        "Required value",
    ),
    (
        "TrainingTask",
        "empty validatorSet name",
        setter("spec.validatorSetRef.name", ""),
        "spec.validatorSetRef.name",
        "at least 1 chars",
    ),
    (
        "TrainingTask",
        "nccl env key",
        setter("spec.nccl", {"env": {"CUDA_VISIBLE_DEVICES": "0"}}),
        "spec.nccl.env",
        "must start with NCCL_",
    ),
    (
        "TrainingTask",
        "negative backoffLimit",
        setter("spec.runPolicy.backoffLimit", -1),
        "spec.runPolicy.backoffLimit",
        "greater than or equal to 0",
    ),
    (
        "TrainingTask",
        "zero miner stake (R_i = S_i x P_i pays nobody)",
        setter("spec.reward.minerStake", "0"),
        "spec.reward.minerStake",
        "should match",
    ),
    ("ValidatorSet", "replicas not 3f+1", setter("spec.replicas", 5), "spec.replicas", "3f+1"),
    (
        "ValidatorSet",
        "replicas below 4 (f = 0)",
        setter("spec.replicas", 1),
        "spec.replicas",
        "greater than or equal to 4",
    ),
    ("ValidatorSet", "no chain", deleter("spec.chain"), "spec.chain", "Required value"),
    (
        "ValidatorSet",
        "rpcUrl and rpcSecretRef",
        setter("spec.chain.rpcSecretRef", {"name": "s", "key": "k"}),
        "spec.chain",
        "exactly one of chain.rpcUrl",
    ),
    (
        "ValidatorSet",
        "contract not an address",
        setter("spec.chain.contract", "0x1234"),
        "spec.chain.contract",
        "should match",
    ),
    (
        "ValidatorSet",
        "chainId zero",
        setter("spec.chain.chainId", 0),
        "spec.chain.chainId",
        "greater than or equal to 1",
    ),
    (
        "ValidatorSet",
        "rpcUrl not http",
        setter("spec.chain.rpcUrl", "ws://x"),
        "spec.chain.rpcUrl",
        "should match",
    ),
    (
        "ValidatorSet",
        "missing keys secret",
        deleter("spec.keysSecretRef"),
        "spec.keysSecretRef",
        "Required value",
    ),
    (
        "ValidatorSet",
        "stakes not one per replica",
        setter("spec.stakes", ["1", "2", "3"]),
        "spec.stakes",
        "one stake per replica",
    ),
    (
        "ValidatorSet",
        "unknown verification device",
        setter("spec.verification.device", "tpu"),
        "spec.verification.device",
        "supported values",
    ),
]


@pytest.mark.parametrize(
    ("kind", "mutate", "field", "fragment"),
    [pytest.param(k, m, f, frag, id=what) for k, what, m, f, frag in BAD_SPECS],
)
def test_bad_spec_rejected_naming_field(
    repo_root: Path,
    crd_schemas: dict[str, schemas.Schema],
    kind: str,
    mutate: Callable[[Doc], None],
    field: str,
    fragment: str,
) -> None:
    base = {
        "TrainingTask": "task.yaml:mlp-demo",
        "ValidatorSet": "validatorset.yaml:vset",
    }[kind]
    doc = copy.deepcopy(next(d for label, d in example_docs(repo_root) if label == base))
    mutate(doc)
    _, causes = schemas.admit(crd_schemas[kind], doc)
    assert causes, "expected a rejection"
    fields = [c.field for c in causes]
    assert field in fields, [str(c) for c in causes]
    matching = [c for c in causes if c.field == field]
    assert any(fragment in c.message for c in matching), [str(c) for c in matching]


def test_bad_spec_table_is_large_enough() -> None:
    assert len(BAD_SPECS) >= 15


def test_transition_rule_uses_old_self() -> None:
    schema = {
        "type": "object",
        "properties": {"x": {"type": "integer"}},
        "x-kubernetes-validations": [
            {"rule": "self.x >= oldSelf.x", "message": "x may not shrink"}
        ],
    }
    assert schemas.validate(schema, {"x": 1}) == []  # create: no old object
    assert schemas.validate(schema, {"x": 2}, old={"x": 1}) == []
    (cause,) = schemas.validate(schema, {"x": 0}, old={"x": 1})
    assert "may not shrink" in cause.message


def test_task_spec_is_immutable(repo_root: Path, crd_schemas: dict[str, schemas.Schema]) -> None:
    """The validators register the spec, trainers and escrow are bound to it: an update may not
    change it (CEL transition rule), while re-applying the same manifest — without the
    defaults the server filled in — and changing metadata or status stay allowed."""
    schema = crd_schemas["TrainingTask"]
    doc = next(d for label, d in example_docs(repo_root) if label == "task.yaml:mlp-demo")
    stored, causes = schemas.admit(schema, copy.deepcopy(doc))
    assert causes == []
    _, causes = schemas.admit(schema, copy.deepcopy(doc), old=stored)
    assert causes == []
    with_status = {**copy.deepcopy(stored), "status": {"phase": "Training"}}
    assert schemas.admit(schema, with_status, old=stored)[1] == []
    for mutate in (
        lambda d: d["spec"]["hyperparameters"].update(lr=0.5),
        lambda d: d["spec"]["resources"].update(nodes=3),
        lambda d: d["spec"]["runPolicy"].update(backoffLimit=9),
    ):
        changed = copy.deepcopy(doc)
        mutate(changed)
        _, causes = schemas.admit(schema, changed, old=stored)
        assert [c.field for c in causes] == ["spec"], [str(c) for c in causes]
        assert "spec is immutable" in causes[0].message


def test_operator_settings_survive_schema_defaults(
    repo_root: Path, crd_schemas: dict[str, schemas.Schema]
) -> None:
    """The chart's validatorImage and nccl.* reach the pods: a CRD default would fill the
    field in every stored object and silently override them (a mirrored image never
    pulled; a task setting only spec.nccl.env getting NCCL_SOCKET_IFNAME=eth0 on a farm
    whose rigs talk over enp3s0)."""
    from pot.operator import builders_trainers, builders_validators
    from pot.operator.config import Config

    cfg = Config(
        validator_image="registry.farm/pot-validator:0.1.0",
        nccl_socket_ifname="enp3s0",
        nccl_ib_disable=False,
    )
    vset = next(d for label, d in example_docs(repo_root) if label == "validatorset.yaml:vset")
    stored, causes = schemas.admit(crd_schemas["ValidatorSet"], copy.deepcopy(vset))
    assert causes == []
    assert "image" not in stored["spec"]
    stored["metadata"] = {**vset["metadata"], "namespace": "farm", "uid": "u"}
    sts = builders_validators.build_statefulset_spec(stored, cfg, "{}")
    images = {c["image"] for c in sts["spec"]["template"]["spec"]["containers"]}
    assert images == {"registry.farm/pot-validator:0.1.0"}

    task = next(d for label, d in example_docs(repo_root) if label == "task-gpu.yaml:tiny-gpt-farm")
    task = copy.deepcopy(task)
    task["spec"]["nccl"] = {"env": {"NCCL_DEBUG": "INFO"}}
    stored, causes = schemas.admit(crd_schemas["TrainingTask"], task)
    assert causes == []
    env = {e["name"]: e["value"] for e in builders_trainers.nccl_env(stored["spec"], cfg)}
    assert env["NCCL_SOCKET_IFNAME"] == "enp3s0"
    assert env["NCCL_IB_DISABLE"] == "0"
    assert env["NCCL_DEBUG"] == "INFO"


def test_settlement_status_keeps_what_the_operator_writes(
    crd_schemas: dict[str, schemas.Schema], repo_root: Path
) -> None:
    """status.settlement is settlement.receipts.find's answer: slashed stake included."""
    doc = next(d for label, d in example_docs(repo_root) if label == "task.yaml:mlp-demo")
    receipt = {
        "txHash": "0x" + "ab" * 32,
        "block": 12,
        "payouts": [{"address": "0x" + "11" * 20, "amount": "5", "role": "miner"}],
        "slashed": {"0x" + "22" * 20: "1000"},
    }
    doc = {**copy.deepcopy(doc), "status": {"phase": "Succeeded", "settlement": receipt}}
    cleaned, causes = schemas.admit(crd_schemas["TrainingTask"], doc)
    assert causes == []
    assert cleaned["status"]["settlement"] == receipt


@pytest.mark.parametrize("replicas", [4, 7])
def test_stakes_one_per_replica_accepted(
    repo_root: Path, crd_schemas: dict[str, schemas.Schema], replicas: int
) -> None:
    """The stakes rule admits what the validators accept: one stake per replica, or none."""
    doc = copy.deepcopy(
        next(d for label, d in example_docs(repo_root) if label == "validatorset.yaml:vset")
    )
    doc["spec"]["replicas"] = replicas
    for stakes in ([str(10**18 * (i + 1)) for i in range(replicas)], []):
        doc["spec"]["stakes"] = stakes
        _, causes = schemas.admit(crd_schemas["ValidatorSet"], doc)
        assert causes == [], [str(c) for c in causes]
    del doc["spec"]["stakes"]
    _, causes = schemas.admit(crd_schemas["ValidatorSet"], doc)
    assert causes == []


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("spec.replicas", {"replicas": 7}),
        ("spec.stakes", {"stakes": [str(10**18)] * 4}),
        ("spec.chain", {"chain": {"chainId": 8453}}),
        ("spec.chain", {"chain": {"contract": "0x" + "ab" * 20}}),
    ],
)
def test_a_running_sets_membership_cannot_change(
    repo_root: Path, crd_schemas: dict[str, schemas.Schema], field: str, change: Doc
) -> None:
    """Replicas, stakes and the chain domain define the validator set: each replica computes
    and signs allocations under them, and the StatefulSet would roll a change onto the replicas
    one by one, so a change is refused rather than split the replicas' views of the set."""
    schema = crd_schemas["ValidatorSet"]
    doc = next(d for label, d in example_docs(repo_root) if label == "validatorset.yaml:vset")
    stored, causes = schemas.admit(schema, copy.deepcopy(doc))
    assert causes == []
    _, causes = schemas.admit(schema, copy.deepcopy(doc), old=stored)
    assert causes == [], "re-applying the same manifest stays allowed"
    tuned = copy.deepcopy(doc)
    tuned["spec"]["pbft"] = {"batchSize": 10}
    assert schemas.admit(schema, tuned, old=stored)[1] == [], "tuning may change"
    changed = copy.deepcopy(doc)
    for key, value in change.items():
        if isinstance(value, dict):
            changed["spec"][key].update(value)
        else:
            changed["spec"][key] = value
    _, causes = schemas.admit(schema, changed, old=stored)
    assert [c.field for c in causes] == [field], [str(c) for c in causes]
    assert "cannot change on a running ValidatorSet" in causes[0].message
