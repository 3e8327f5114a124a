"""The chart as a farm installs it: the traffic its NetworkPolicies let through, RBAC scoped
to the watched namespaces, values combinations that must render working objects, and
NOTES commands that target the right namespace (real helm v4 binary)."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pot import charting
from pot.localcluster import authorizing as az
from pot.operator import rbac

CHART = "charts/pot-operator"
RELEASE_NS = "pot-system"
VALIDATOR = {"app.kubernetes.io/name": "pot", "app.kubernetes.io/component": "validator"}
TRAINER = {"app.kubernetes.io/name": "pot", "app.kubernetes.io/component": "trainer"}
OPERATOR = {
    "app.kubernetes.io/name": "pot",
    "app.kubernetes.io/instance": "pot",
    "app.kubernetes.io/component": "operator",
}
PROMETHEUS = {"app.kubernetes.io/name": "prometheus"}


def helm_run(helm: str, repo_root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm, *args], cwd=repo_root, capture_output=True, text=True, timeout=60, check=False
    )


def render(helm: str, repo_root: Path, *extra: str) -> list[dict[str, Any]]:
    out = helm_run(helm, repo_root, "template", "pot", CHART, "-n", RELEASE_NS, *extra)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


# A NetworkPolicy evaluator, as the API documents the semantics: a pod selected by any
# policy accepts a connection only if some ingress rule of some policy selecting it
# matches the source (a peer) and the port.
def _matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # the chart uses nothing else
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _peer_admits(peer: Mapping[str, Any], policy_ns: str, src_ns: str, src: dict) -> bool:
    if "namespaceSelector" in peer:
        ns_labels = {"kubernetes.io/metadata.name": src_ns}
        if not _matches(peer["namespaceSelector"], ns_labels):
            return False
    elif src_ns != policy_ns:
        return False
    return _matches(peer.get("podSelector") or {}, src)


Endpoint = tuple[str, dict[str, str]]  # (namespace, pod labels)


def allowed(policies: list[dict[str, Any]], src: Endpoint, dst: Endpoint, port: int) -> bool:
    (src_ns, src_labels), (dst_ns, dst_labels) = src, dst
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == dst_ns and _matches(p["spec"]["podSelector"], dst_labels)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from")
            ports = rule.get("ports")
            peer_ok = not peers or any(
                _peer_admits(peer, dst_ns, src_ns, src_labels) for peer in peers
            )
            port_ok = not ports or any(
                p.get("protocol", "TCP") == "TCP" and p.get("port") in (None, port) for p in ports
            )
            if peer_ok and port_ok:
                return True
    return False


def policies_of(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == "NetworkPolicy"]


def test_trainers_reach_each_other_on_the_ports_gloo_and_nccl_pick(
    helm: str, repo_root: Path
) -> None:
    """torch rendezvous is 29500, but gloo and NCCL's socket transport listen on ephemeral
    ports: a 29500-only rule hangs every multi-node gang at its first collective."""
    pols = policies_of(render(helm, repo_root, "--set", "watchNamespaces={farm}"))
    trainer, validator = ("farm", TRAINER), ("farm", VALIDATOR)
    for port in (29500, 8090, 41237, 60999):
        assert allowed(pols, trainer, trainer, port), port
    # ... and the fence still holds for everyone else.
    assert allowed(pols, validator, trainer, 8090)
    assert not allowed(pols, validator, trainer, 29500)
    assert not allowed(pols, ("farm", {}), trainer, 41237)
    # What the validators need: PBFT between peers, the API from trainers and the operator.
    assert allowed(pols, validator, validator, 7000)
    assert allowed(pols, trainer, validator, 8080)
    assert allowed(pols, (RELEASE_NS, OPERATOR), validator, 8080)
    assert not allowed(pols, trainer, validator, 7000)
    assert not allowed(pols, ("other", OPERATOR), validator, 8080)


def test_metrics_from_lets_scrapers_read_metrics_ports_only(
    helm: str, repo_root: Path, tmp_path: Path
) -> None:
    """The chart ships a dashboard of validator, settlement and trainer metrics; without
    metricsFrom the policies keep every scraper away, with it only the metrics ports open."""
    prom: Endpoint = ("monitoring", PROMETHEUS)
    validator, trainer = (RELEASE_NS, VALIDATOR), (RELEASE_NS, TRAINER)
    closed = policies_of(render(helm, repo_root))
    assert not allowed(closed, prom, validator, 8080)
    peer = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": PROMETHEUS},
    }
    path = tmp_path / "metrics.yaml"
    path.write_text(yaml.safe_dump({"networkPolicies": {"metricsFrom": [peer]}}))
    pols = policies_of(render(helm, repo_root, "-f", str(path)))
    for doc in pols:
        kubernetes_validate.validate(doc, "1.33.0", strict=True)
    assert allowed(pols, prom, validator, 8080)
    assert allowed(pols, prom, validator, 8081)
    assert allowed(pols, prom, trainer, 8090)
    assert not allowed(pols, prom, validator, 7000)
    assert not allowed(pols, prom, trainer, 29500)
    assert not allowed(pols, ("elsewhere", PROMETHEUS), validator, 8080)


def test_generated_key_is_mounted_whatever_secret_key_says(helm: str, repo_root: Path) -> None:
    """operatorKey.secretKey names the item of *your* Secret; the generated one holds "key",
    and mounting another item would leave the operator pod stuck in ContainerCreating."""
    docs = render(helm, repo_root, "--set", "operatorKey.secretKey=signing")
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == "operator-key"]
    assert vol["secret"]["secretName"] == secret["metadata"]["name"]
    assert [i["key"] for i in vol["secret"]["items"]] == list(secret["data"])
    assert len(base64.b64decode(secret["data"]["key"])) == 64
    own = render(
        helm,
        repo_root,
        "--set",
        "operatorKey.existingSecret=farm-key,operatorKey.secretKey=signing",
    )
    (deployment,) = [d for d in own if d["kind"] == "Deployment"]
    (vol,) = [
        v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "operator-key"
    ]
    assert vol["secret"]["secretName"] == "farm-key"
    assert vol["secret"]["items"] == [{"key": "signing", "path": "key"}]


def _grants(docs: list[dict[str, Any]]) -> dict[str | None, list[dict[str, Any]]]:
    """Rules of the operator's account by namespace (None: cluster-wide)."""
    roles = {(d["kind"], d["metadata"]["name"]): d["rules"] for d in docs if "rules" in d}
    out: dict[str | None, list[dict[str, Any]]] = {}
    for d in docs:
        if d["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        assert d["subjects"][0]["namespace"] == RELEASE_NS
        ns = d["metadata"].get("namespace") if d["kind"] == "RoleBinding" else None
        ref = d["roleRef"]
        out.setdefault(ns, []).extend(roles[(ref["kind"], ref["name"])])
    return out


def test_watch_namespaces_scope_the_grants_to_them(helm: str, repo_root: Path) -> None:
    """An operator told to watch farm-a and farm-b makes every namespaced call there
    (kopf's namespaced watches, handlers._prime): it must not read kube-system's Secrets."""
    docs = render(helm, repo_root, "--set", "watchNamespaces={farm-a,farm-b}")
    grants = _grants(docs)
    assert set(grants) == {None, RELEASE_NS, "farm-a", "farm-b"}
    cluster = grants[None]
    resources = {r for rule in cluster for r in rule["resources"]}
    assert resources == {"nodes", "namespaces", "customresourcedefinitions", "pods"}
    assert resources - {"pods"} <= charting.CLUSTER_SCOPED
    # Pods everywhere, for node usage (usage_watching): read-only, nothing else namespaced.
    assert [r for r in cluster if "pods" in r["resources"]] == [
        dict(r) for r in rbac.NODE_USAGE_RULES
    ]
    for ns in ("farm-a", "farm-b"):
        assert grants[ns] == [dict(r) for r in rbac.OPERATOR_RULES]
    assert all("leases" in rule["resources"] for rule in grants[RELEASE_NS])
    for doc in docs:
        if doc["kind"] in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
            kubernetes_validate.validate(doc, "1.33.0", strict=True)
    # Cluster-wide mode keeps one ClusterRoleBinding of every rule, under another name
    # (a binding's roleRef cannot change on `helm upgrade` between the two modes).
    wide = render(helm, repo_root)
    assert sorted(map(str, _grants(wide)[None])) == sorted(
        map(str, [dict(r) for r in (*rbac.OPERATOR_RULES, *rbac.NODE_USAGE_RULES)])
    )
    # The node-usage binding is the same in both modes (same roleRef), the others not.
    names = {d["metadata"]["name"] for d in docs if d["kind"] == "ClusterRoleBinding"}
    assert names & {d["metadata"]["name"] for d in wide if d["kind"] == "ClusterRoleBinding"} == {
        "pot-pot-operator-node-usage"
    }


def test_watch_namespaces_mode_reads_pods_everywhere_and_writes_only_where_it_watches(
    helm_template: Callable[..., list[dict[str, Any]]],
) -> None:
    """The rendered RBAC, evaluated by the local cluster's RBAC authorizer: with
    watchNamespaces={farm-a}, the operator may list and watch every namespace's pods
    (node usage, usage_watching) but write pods, or read Secrets, only in farm-a."""
    docs = helm_template("pot", RELEASE_NS, "--set", "watchNamespaces={farm-a}")
    roles = {
        (d["kind"], d["metadata"].get("namespace", "") if d["kind"] == "Role" else "", name): d
        for d in docs
        if d["kind"] in ("Role", "ClusterRole")
        for name in [d["metadata"]["name"]]
    }
    (usage,) = [
        d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-usage")
    ]
    assert usage["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}
    ]
    (account,) = [d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"]
    user = az.service_account_user(RELEASE_NS, account)

    def may(verb: str, resource: str, ns: str, name: str = "") -> bool:
        return az.allowed(
            user,
            az.Attributes(verb, "", resource, namespace=ns, name=name),
            cluster_bindings=[d for d in docs if d["kind"] == "ClusterRoleBinding"],
            namespace_bindings=[d for d in docs if d["kind"] == "RoleBinding"],
            role=lambda kind, ns_, name_: roles.get((kind, ns_, name_)),
        )

    # GET /api/v1/pods (no namespace): the usage list and watch.
    assert may("list", "pods", "") and may("watch", "pods", "")
    for ns in ("farm-a", "other", "kube-system"):
        assert may("list", "pods", ns) and may("watch", "pods", ns)
    for verb in ("create", "patch", "delete"):
        assert may(verb, "pods", "farm-a", "p"), verb
        assert not may(verb, "pods", "other", "p"), verb
        assert not may(verb, "pods", "", "p"), verb
    assert not may("get", "pods", "other", "p")  # list and watch only: no code gets pods
    assert not may("update", "pods", "other", "p")
    assert not may("deletecollection", "pods", "other")
    assert may("list", "secrets", "farm-a") and not may("list", "secrets", "other")
    assert not may("create", "events", "other") and not may("create", "services", "other")


def test_cluster_scoped_rules_split_mixed_rules() -> None:
    rules = [
        {"apiGroups": [""], "resources": ["pods", "nodes", "nodes/status"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
    ]
    assert charting.cluster_scoped_rules(rules) == [
        {"apiGroups": [""], "resources": ["nodes", "nodes/status"], "verbs": ["get"]}
    ]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("--set", "watchNamespaces={farm-a,farm-a}"), "watchNamespaces"),
        (("--set", "trainerStore.size=ten gigs"), "size"),
        (
            ("--set", "chain.rpcUrl=https://rpc.example,chain.rpcSecretName=chain-rpc"),
            "rpcUrl",
        ),
        (("--set", "networkPolicies.metricsFrom[0]=x"), "metricsFrom"),
    ],
    ids=["duplicate-namespace", "size-not-a-quantity", "two-rpc-urls", "peer-not-object"],
)
def test_values_schema_refuses_what_cannot_work(
    helm: str, repo_root: Path, args: tuple[str, ...], field: str
) -> None:
    out = helm_run(helm, repo_root, "template", "pot", CHART, *args)
    assert out.returncode != 0
    assert field in out.stderr


def test_notes_commands_target_the_watched_namespace(helm: str, repo_root: Path) -> None:
    out = helm_run(
        helm,
        repo_root,
        "install",
        "--dry-run=client",
        "pot",
        CHART,
        "-n",
        RELEASE_NS,
        "-f",
        f"{CHART}/values-gpu-farm.yaml",
        "--set",
        "watchNamespaces={farm-a}",
    )
    assert out.returncode == 0, out.stderr
    notes = out.stdout.split("NOTES:", 1)[1]
    commands = [line.strip() for line in notes.splitlines() if line.strip().startswith("kubectl")]
    tasks = [c for c in commands if "explain" not in c]
    assert len(tasks) >= 6
    for command in tasks:
        assert " -n " in command, command
    assert any(c.startswith("kubectl -n farm-a create secret generic miner-keys") for c in tasks)
    assert any(c.startswith("kubectl -n pot-system create secret generic chain-rpc") for c in tasks)
    assert "pot task status mlp-demo -n farm-a" in notes
    # The operator starts a task only once its miners staked (MinerStakeMissing).
    stake = notes.index("pot chain stake --key-file miner-0.key")
    fund = notes.index("pot chain fund --key-file funder.key --task farm-a/mlp-demo")
    assert stake < fund < notes.index("kubectl -n farm-a apply -f examples/task.yaml")


def test_children_owner_references_are_permitted(helm: str, repo_root: Path) -> None:
    """Every child the operator creates names its owner with blockOwnerDeletion; clusters
    running the OwnerReferencesPermissionEnforcement admission plugin (OpenShift's
    default) refuse such a create (403) unless the client may update the owner's
    finalizers subresource, so the chart's ClusterRole must grant exactly that."""
    from pot.operator import builders_trainers as bt
    from pot.operator import builders_validators as bv
    from pot.operator import names
    from pot.operator.config import Config

    def example(name: str) -> dict[str, Any]:
        doc: dict[str, Any] = yaml.safe_load((repo_root / "examples" / name).read_text())
        doc["metadata"].update(namespace="farm-a", uid="0d2a1c4e-0000-4000-8000-000000000000")
        return doc

    task, vset, config = example("task.yaml"), example("validatorset.yaml"), Config()
    ids = [bv.Identity(address="0x" + "11" * 20, public_key="0x04" + "22" * 64)] * 4
    children = [
        bt.build_service_spec(task),
        bt.build_store_claim_spec(task, 0, config),
        bt.build_pod_spec(task, 0, 0, config),
        bt.build_volcano_podgroup(task, 0),
        *bv.build_all(vset, ids, config),
    ]
    plurals = {"TrainingTask": names.TASKS, "ValidatorSet": names.VSETS}
    (role,) = [
        d
        for d in render(helm, repo_root)
        if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "pot-pot-operator"
    ]
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    blocking = [ref for child in children for ref in child["metadata"].get("ownerReferences") or []]
    assert {ref["kind"] for ref in blocking} == set(plurals)
    for ref in blocking:
        if ref.get("blockOwnerDeletion"):
            group = ref["apiVersion"].split("/")[0]
            need = (group, f"{plurals[ref['kind']]}/finalizers", "update")
            assert need in granted, f"{ref['kind']} child: {need} not granted"
