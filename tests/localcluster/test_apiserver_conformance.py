"""Table-driven conformance of the local API server, part 1: discovery, OpenAPI,
tables, built-in kinds and robustness (issue 3 Deliver 2, 3 and 5); the
semantics rows (Deliver 4) are in test_apiserver_semantics.py.

Each row is a small function taking the shared server and asserting one
behaviour through raw HTTP, so a failure names exactly what broke.
"""

from __future__ import annotations

import json
import threading

import pytest

from tests.localcluster.conformance_kit import (
    GIZMOS,
    NS,
    TABLE,
    cm,
    gizmo,
    install_crds,
    ok,
    registry,
)
from tests.localcluster.conftest import Cluster

ROWS, row = registry()


@pytest.fixture(scope="module")
def c(apiserver_cluster: Cluster) -> Cluster:
    return install_crds(apiserver_cluster)


# -- Deliver 2: discovery, OpenAPI, tables --------------------------------------


@row
def version(c: Cluster) -> None:
    assert ok(c, "GET", "/version")["gitVersion"].startswith("v1.")


@row
def discovery_core_lists_verbs_short_names_and_subresources(c: Cluster) -> None:
    res = {r["name"]: r for r in ok(c, "GET", "/api/v1")["resources"]}
    assert res["pods"]["shortNames"] == ["po"] and "watch" in res["pods"]["verbs"]
    assert {
        "pods/status",
        "pods/log",
        "pods/binding",
        "pods/eviction",
        "namespaces/finalize",
    } <= set(res)
    assert res["nodes"]["namespaced"] is False


@row
def discovery_groups(c: Cluster) -> None:
    names = {g["name"] for g in ok(c, "GET", "/apis")["groups"]}
    assert {
        "apps",
        "batch",
        "policy",
        "coordination.k8s.io",
        "rbac.authorization.k8s.io",
        "events.k8s.io",
        "discovery.k8s.io",
        "apiextensions.k8s.io",
        "conf.pot.dev",
    } <= names


@row
def discovery_custom_resources_with_categories(c: Cluster) -> None:
    res = {r["name"]: r for r in ok(c, "GET", "/apis/conf.pot.dev/v1")["resources"]}
    assert (
        res["gizmos"]["categories"] == ["confcat"]
        and "gizmos/status" in res
        and "gizmos/scale" in res
    )


@row
def openapi_v3_documents(c: Cluster) -> None:
    paths = ok(c, "GET", "/openapi/v3")["paths"]
    assert "apis/apps/v1" in paths and "api/v1" in paths and "apis/conf.pot.dev/v1" in paths
    doc = ok(c, "GET", paths["apis/conf.pot.dev/v1"]["serverRelativeURL"])
    schemas = doc["components"]["schemas"].values()
    gizmo_schema = next(
        s
        for s in schemas
        if s.get("x-kubernetes-group-version-kind", [{}])[0].get("kind") == "Gizmo"
    )
    assert "size" in gizmo_schema["properties"]["spec"]["properties"]
    patch_ops = [p["patch"] for p in doc["paths"].values() if "patch" in p]
    assert any(q["name"] == "fieldValidation" for op in patch_ops for q in op["parameters"])


@row
def table_with_printer_columns(c: Cluster) -> None:
    ok(c, "POST", GIZMOS, gizmo("tab", size=3))
    table = ok(c, "GET", GIZMOS, headers={"Accept": TABLE})
    assert table["kind"] == "Table"
    assert [col["name"] for col in table["columnDefinitions"]] == ["Name", "Size"]
    assert ["tab", 3] in [r["cells"] for r in table["rows"]]


# -- Deliver 3: built-in resources -------------------------------------------------

BUILTINS = [
    ("/api/v1", "namespaces", "Namespace", False),
    ("/api/v1", "pods", "Pod", True),
    ("/api/v1", "services", "Service", True),
    ("/api/v1", "endpoints", "Endpoints", True),
    ("/api/v1", "configmaps", "ConfigMap", True),
    ("/api/v1", "secrets", "Secret", True),
    ("/api/v1", "serviceaccounts", "ServiceAccount", True),
    ("/api/v1", "events", "Event", True),
    ("/api/v1", "nodes", "Node", False),
    ("/api/v1", "persistentvolumeclaims", "PersistentVolumeClaim", True),
    ("/apis/apps/v1", "statefulsets", "StatefulSet", True),
    ("/apis/apps/v1", "deployments", "Deployment", True),
    ("/apis/apps/v1", "replicasets", "ReplicaSet", True),
    ("/apis/batch/v1", "jobs", "Job", True),
    ("/apis/policy/v1", "poddisruptionbudgets", "PodDisruptionBudget", True),
    ("/apis/coordination.k8s.io/v1", "leases", "Lease", True),
    ("/apis/rbac.authorization.k8s.io/v1", "roles", "Role", True),
    ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding", True),
    ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", "ClusterRole", False),
    ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", "ClusterRoleBinding", False),
    ("/apis/events.k8s.io/v1", "events", "Event", True),
    ("/apis/discovery.k8s.io/v1", "endpointslices", "EndpointSlice", True),
]


@row
def builtin_kinds_create_get_list_delete(c: Cluster) -> None:
    for prefix, plural, kind, namespaced in BUILTINS:
        base = f"{prefix}/namespaces/default/{plural}" if namespaced else f"{prefix}/{plural}"
        body = {
            "apiVersion": prefix.split("/", 2)[-1] if prefix.startswith("/apis") else "v1",
            "kind": kind,
            "metadata": {"name": f"b-{plural}"},
        }
        made = ok(c, "POST", base, body)
        assert made["kind"] == kind and made["metadata"]["uid"]
        assert ok(c, "GET", f"{base}/b-{plural}")["metadata"]["name"] == f"b-{plural}"
        assert any(i["metadata"]["name"] == f"b-{plural}" for i in ok(c, "GET", base)["items"])
        ok(c, "DELETE", f"{base}/b-{plural}")


@row
def service_gets_a_cluster_ip_and_secret_string_data_is_encoded(c: Cluster) -> None:
    svc = ok(
        c,
        "POST",
        f"{NS}/services",
        {"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}},
    )
    assert (
        svc["spec"]["clusterIP"].startswith("10.96.")
        and svc["spec"]["ports"][0]["targetPort"] == 80
    )
    sec = ok(c, "POST", f"{NS}/secrets", {"metadata": {"name": "sec"}, "stringData": {"k": "v"}})
    assert sec["data"] == {"k": "dg=="} and "stringData" not in sec


# -- Deliver 5: robustness ----------------------------------------------------------


@row
def malformed_json_is_400(c: Cluster) -> None:
    code, err = c.request("POST", f"{NS}/configmaps", raw=b"{not json")
    assert code == 400 and err["kind"] == "Status" and err["reason"] == "BadRequest"


@row
def malformed_yaml_is_400(c: Cluster) -> None:
    code, err = c.request(
        "PATCH",
        f"{NS}/configmaps/x?fieldManager=m",
        raw=b"a: [b\n  c: :",
        content_type="application/apply-patch+yaml",
    )
    assert code == 400 and err["kind"] == "Status"


@row
def unknown_resource_is_404(c: Cluster) -> None:
    code, err = c.request("GET", f"{NS}/widgetz")
    assert code == 404 and err["kind"] == "Status"
    assert c.request("GET", "/apis/nope.dev/v1")[0] == 404


@row
def wrong_api_version_or_kind_is_400(c: Cluster) -> None:
    code, err = c.request("POST", f"{NS}/configmaps", {**cm("wv"), "apiVersion": "apps/v1"})
    assert code == 400 and "does not match the expected API version" in err["message"]
    code, err = c.request("POST", f"{NS}/configmaps", {**cm("wk"), "kind": "Secret"})
    assert code == 400


@row
def invalid_name_is_422(c: Cluster) -> None:
    code, err = c.request("POST", f"{NS}/configmaps", cm("Not_Valid"))
    assert code == 422 and err["details"]["causes"][0]["field"] == "metadata.name"


@row
def oversized_body_is_413(c: Cluster) -> None:
    big = json.dumps(cm("big") | {"data": {"a": "x" * (3 * 1024 * 1024 + 10)}}).encode()
    code, err = c.request("POST", f"{NS}/configmaps", raw=big)
    assert code == 413 and err["reason"] == "RequestEntityTooLarge"
    assert c.request("GET", "/version")[0] == 200


@row
def unsupported_patch_type_is_415(c: Cluster) -> None:
    ok(c, "POST", f"{NS}/configmaps", cm("ptype"))
    code, err = c.request(
        "PATCH", f"{NS}/configmaps/ptype", {"data": {}}, content_type="text/plain"
    )
    assert code == 415 and err["kind"] == "Status"


@row
def concurrent_writers_never_lose_an_update(c: Cluster) -> None:
    ok(c, "POST", f"{NS}/configmaps", {"metadata": {"name": "counter"}, "data": {"n": "0"}})
    conflicts = 0
    lock = threading.Lock()

    def bump(times: int) -> None:
        nonlocal conflicts
        done = 0
        while done < times:
            cur = ok(c, "GET", f"{NS}/configmaps/counter")
            cur["data"]["n"] = str(int(cur["data"]["n"]) + 1)
            code, _ = c.request("PUT", f"{NS}/configmaps/counter", cur)
            if code == 200:
                done += 1
            else:
                assert code == 409
                with lock:
                    conflicts += 1

    threads = [threading.Thread(target=bump, args=(10,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert ok(c, "GET", f"{NS}/configmaps/counter")["data"]["n"] == "60"


@pytest.mark.parametrize("name", list(ROWS))
def test_conformance(c: Cluster, name: str) -> None:
    ROWS[name](c)
