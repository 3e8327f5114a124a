"""The Helm chart: generated parts in sync, `helm lint`/`template` clean, and every
rendered manifest valid against the Kubernetes schemas (real helm v4 binary)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pot import charting

CHART = "charts/pot-operator"
K8S_VERSION = "1.33.0"
# Kinds owned by other projects' CRDs: not in the upstream schemas.
FOREIGN_KINDS = {"ServiceMonitor", "PodMonitor"}


def run_helm(helm: str, repo_root: Path, *args: str) -> str:
    out = subprocess.run(
        [helm, *args], cwd=repo_root, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_generated_files_in_sync() -> None:
    assert charting.drift() == [], "run `make chart` to regenerate the chart's CRDs and RBAC"


def test_drift_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_chart = tmp_path / "chart"
    (fake_chart / "crds").mkdir(parents=True)
    (fake_chart / "files").mkdir()
    monkeypatch.setattr(charting, "CHART", fake_chart)
    assert charting.drift()  # everything missing
    charting.sync()
    assert charting.drift() == []
    edited = fake_chart / "crds" / "trainingtask.yaml"
    edited.write_text("edited by hand\n")
    stray = fake_chart / "crds" / "stray.yaml"
    stray.write_text("kind: Nothing\n")
    assert charting.drift() == [str(edited), f"{stray} (no source in crds/)"]


@pytest.mark.parametrize("values", [None, "values-gpu-farm.yaml"])
def test_helm_lint(helm: str, repo_root: Path, values: str | None) -> None:
    args = ["lint", "--strict", CHART]
    if values:
        args += ["-f", f"{CHART}/{values}"]
    run_helm(helm, repo_root, *args)


def render(helm: str, repo_root: Path, *extra: str) -> list[dict[str, Any]]:
    text = run_helm(
        helm, repo_root, "template", "pot", CHART, "-n", "pot-system", "--include-crds", *extra
    )
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.mark.parametrize(
    "extra",
    [
        (),
        ("-f", f"{CHART}/values-gpu-farm.yaml"),
        (
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "watchNamespaces={farm-a,farm-b}",
        ),
    ],
    ids=["defaults", "gpu-farm", "servicemonitor-namespaces"],
)
def test_rendered_manifests_validate(helm: str, repo_root: Path, extra: tuple[str, ...]) -> None:
    docs = render(helm, repo_root, *extra)
    kinds = {d["kind"] for d in docs}
    assert {
        "Deployment",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ServiceAccount",
        "CustomResourceDefinition",
    } <= kinds
    for doc in docs:
        if doc["kind"] in FOREIGN_KINDS:
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_operator_pod_is_locked_down(helm: str, repo_root: Path) -> None:
    (deployment,) = [d for d in render(helm, repo_root) if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["limits"]


def test_operator_key_is_generated_mounted_and_replaceable(helm: str, repo_root: Path) -> None:
    import base64
    import re

    docs = render(helm, repo_root)
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    assert secret["metadata"]["name"] == "pot-pot-operator-key"
    assert re.fullmatch(r"[0-9a-f]{64}", base64.b64decode(secret["data"]["key"]).decode())
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == "operator-key"]
    assert vol["secret"]["secretName"] == "pot-pot-operator-key"
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["POT_OPERATOR_KEY_FILE"] == "/var/run/pot/operator-key/key"
    own = render(helm, repo_root, "--set", "operatorKey.existingSecret=my-key")
    assert not [d for d in own if d["kind"] == "Secret"]
    (deployment,) = [d for d in own if d["kind"] == "Deployment"]
    vols = deployment["spec"]["template"]["spec"]["volumes"]
    assert [v["secret"]["secretName"] for v in vols if v["name"] == "operator-key"] == ["my-key"]


def test_rbac_is_least_privilege(helm: str, repo_root: Path) -> None:
    docs = render(helm, repo_root)
    roles = {d["metadata"]["name"]: d["rules"] for d in docs if d["kind"] == "ClusterRole"}
    assert set(roles) == {"pot-pot-operator", "pot-pot-operator-node-usage"}
    rules = [rule for role in roles.values() for rule in role]
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
        if "secrets" in rule["resources"]:
            assert set(rule["verbs"]) <= {"create", "get", "list", "watch"}, (
                "the operator never changes a Secret (it only creates a set's accepted keys)"
            )
        assert "leases" not in rule["resources"], "Leases belong in the namespaced Role"
    assert not any("escalate" in r["verbs"] or "bind" in r["verbs"] for r in rules)
    assert roles["pot-pot-operator-node-usage"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}
    ]


def test_leader_election_is_a_role_in_the_release_namespace(helm: str, repo_root: Path) -> None:
    """The Lease rules are pot.operator.rbac.LEASE_RULES, bound in the release namespace only
    (the template writes them out, so this is the drift check for them)."""
    from pot.operator import rbac

    docs = render(helm, repo_root)
    (role,) = [d for d in docs if d["kind"] == "Role"]
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    (account,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    assert role["rules"] == [dict(rule) for rule in rbac.LEASE_RULES]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "pot-system"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "pot-system"}
    ]
    # The operator's Lease is the one the Role names, in the pod's (the release) namespace.
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "POT_LEASE_NAME" not in env and "POT_LEASE_NAMESPACE" not in env
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_network_policies_fence_validator_ports(helm: str, repo_root: Path) -> None:
    docs = render(helm, repo_root, "--set", "watchNamespaces={farm-a}")
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    vals = policies["pot-validators"]
    assert vals["metadata"]["namespace"] == "farm-a"
    ports = {p["port"] for rule in vals["spec"]["ingress"] for p in rule["ports"]}
    assert ports == {7000, 8080}
    pbft_rule = next(
        r for r in vals["spec"]["ingress"] if any(p["port"] == 7000 for p in r["ports"])
    )
    assert pbft_rule["from"] == [
        {
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "pot",
                    "app.kubernetes.io/component": "validator",
                }
            }
        }
    ]


def test_values_schema_rejects_bad_values(helm: str, repo_root: Path) -> None:
    out = subprocess.run(
        [helm, "template", "pot", CHART, "--set", "replicas=0"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode != 0
    assert "replicas" in out.stderr


def test_dashboard_is_json(repo_root: Path) -> None:
    doc = json.loads((repo_root / CHART / "files" / "grafana-dashboard.json").read_text())
    assert all(p["targets"][0]["expr"].find("pot_") >= 0 for p in doc["panels"])


def test_the_stake_check_cannot_be_turned_off_through_the_chart(helm: str, repo_root: Path) -> None:
    """POT_STAKE_CHECK=0 is for test stacks without a chain: no value of the chart sets it,
    and the values schema refuses a key that would look like one."""
    (deployment,) = [d for d in render(helm, repo_root) if d["kind"] == "Deployment"]
    env = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "POT_STAKE_CHECK" not in env and "POT_CHAIN_RPC_URL" not in env
    for key in ("stakeCheck=false", "env.POT_STAKE_CHECK=0", "extraEnv[0].name=POT_STAKE_CHECK"):
        proc = subprocess.run(
            [helm, "template", "pot", CHART, "--set", key],
            cwd=repo_root,
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode != 0, key
        assert "additional properties" in proc.stderr.lower(), proc.stderr
