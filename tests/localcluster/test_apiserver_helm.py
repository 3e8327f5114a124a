"""Real helm v4 installs, upgrades, rolls back and uninstalls a small chart on the local API server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.localcluster.conftest import HELM, Cluster

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not HELM.exists(), reason="helm is installed by `make install` into .tools/bin"
    ),
]

CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gadgets.test.pot.dev}
spec:
  group: test.pot.dev
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec: {type: object, properties: {color: {type: string}}}
"""

TEMPLATES = {
    "configmap.yaml": """
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
data:
  greeting: {{ .Values.greeting | quote }}
""",
    "deployment.yaml": """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
  labels: {app: web}
spec:
  replicas: {{ .Values.replicas }}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: "pot/web:{{ .Values.tag }}"
          env: [{name: GREETING, value: {{ .Values.greeting | quote }}}]
""",
    "gadget.yaml": """
apiVersion: test.pot.dev/v1
kind: Gadget
metadata:
  name: {{ .Release.Name }}-gadget
spec:
  color: {{ .Values.color }}
""",
}


@pytest.fixture(scope="module")
def chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("chart") / "demo"
    (root / "templates").mkdir(parents=True)
    (root / "crds").mkdir()
    (root / "Chart.yaml").write_text("apiVersion: v2\nname: demo\nversion: 0.1.0\n")
    (root / "values.yaml").write_text("greeting: hello\nreplicas: 1\ntag: '1'\ncolor: red\n")
    (root / "crds" / "gadget.yaml").write_text(CRD)
    for name, text in TEMPLATES.items():
        (root / "templates" / name).write_text(text)
    return root


def _get(cluster: Cluster, *what: str) -> dict:  # type: ignore[type-arg]
    return json.loads(cluster.kubectl("get", *what, "-o", "json").stdout)


def test_install_upgrade_rollback_uninstall(apiserver_cluster: Cluster, chart: Path) -> None:
    c = apiserver_cluster
    c.helm("install", "demo", str(chart), "--wait=false")
    assert _get(c, "configmap", "demo-config")["data"] == {"greeting": "hello"}
    assert _get(c, "deploy", "demo-web")["spec"]["replicas"] == 1
    assert _get(c, "gadget", "demo-gadget")["spec"] == {"color": "red"}
    c.helm("upgrade", "demo", str(chart), "--set", "greeting=hi,replicas=3,color=blue")
    assert _get(c, "configmap", "demo-config")["data"] == {"greeting": "hi"}
    dep = _get(c, "deploy", "demo-web")
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["template"]["spec"]["containers"][0]["env"] == [
        {"name": "GREETING", "value": "hi"}
    ]
    assert _get(c, "gadget", "demo-gadget")["spec"] == {"color": "blue"}
    history = c.helm("history", "demo", "-o", "json").stdout
    assert [h["revision"] for h in json.loads(history)] == [1, 2]
    c.helm("rollback", "demo", "1")
    assert _get(c, "configmap", "demo-config")["data"] == {"greeting": "hello"}
    assert _get(c, "deploy", "demo-web")["spec"]["replicas"] == 1
    assert "deployed" in c.helm("status", "demo").stdout
    c.helm("uninstall", "demo")
    assert c.kubectl("get", "configmap", "demo-config", check=False).returncode != 0
    assert c.kubectl("get", "deploy", "demo-web", check=False).returncode != 0
    assert "demo" not in c.helm("list", "-q").stdout.split()
    # CRDs from crds/ stay installed, as helm documents.
    assert c.kubectl("get", "crd", "gadgets.test.pot.dev", check=False).returncode == 0
