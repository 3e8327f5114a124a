"""Table-driven conformance of the local API server: one row per behaviour of issue 3 Deliver 2-5.

Each row is a small function taking the shared server and asserting one
behaviour through raw HTTP, so a failure names exactly what broke.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from pot.localcluster import storage
from tests.localcluster.conftest import Cluster

NS = "/api/v1/namespaces/default"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
ROWS: dict[str, Callable[[Cluster], None]] = {}


def row(fn: Callable[[Cluster], None]) -> Callable[[Cluster], None]:
    ROWS[fn.__name__] = fn
    return fn


def ok(c: Cluster, method: str, path: str, body: Any = None, **kw: Any) -> Any:
    code, out = c.request(method, path, body, **kw)
    assert code < 300, (code, out)
    return out


def cm(name: str, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, **meta},
        "data": {"a": "1"},
    }


def until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def watch_lines(c: Cluster, path: str, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with urllib.request.urlopen(c.url + path, timeout=timeout) as resp:
        for line in resp:
            out.append(json.loads(line))
            if len(out) >= n:
                break
    return out


WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "gizmos.conf.pot.dev"},
    "spec": {
        "group": "conf.pot.dev",
        "scope": "Namespaced",
        "names": {
            "plural": "gizmos",
            "singular": "gizmo",
            "kind": "Gizmo",
            "categories": ["confcat"],
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {
                    "status": {},
                    "scale": {
                        "specReplicasPath": ".spec.replicas",
                        "statusReplicasPath": ".status.replicas",
                    },
                },
                "additionalPrinterColumns": [
                    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"}
                ],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "x-kubernetes-validations": [
                                    {
                                        "rule": "self.size <= self.max",
                                        "message": "size must not exceed max",
                                    }
                                ],
                                "properties": {
                                    "size": {"type": "integer", "default": 1},
                                    "max": {"type": "integer", "default": 10},
                                    "replicas": {"type": "integer"},
                                    "mode": {"type": "string", "enum": ["a", "b"]},
                                },
                            },
                            "status": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                        },
                    }
                },
            }
        ],
    },
}
GIZMOS = "/apis/conf.pot.dev/v1/namespaces/default/gizmos"


def gizmo(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "conf.pot.dev/v1",
        "kind": "Gizmo",
        "metadata": {"name": name},
        "spec": spec,
    }


@pytest.fixture(scope="module")
def c(apiserver_cluster: Cluster) -> Cluster:
    ok(
        apiserver_cluster,
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        WIDGET_CRD,
    )
    return apiserver_cluster


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


# -- Deliver 4: semantics ---------------------------------------------------------------


@row
def resource_version_is_monotonic(c: Cluster) -> None:
    rvs = [
        int(ok(c, "POST", f"{NS}/configmaps", cm(f"rv-{i}"))["metadata"]["resourceVersion"])
        for i in range(3)
    ]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3
    assert int(ok(c, "GET", f"{NS}/configmaps")["metadata"]["resourceVersion"]) >= rvs[-1]


@row
def stale_update_conflicts(c: Cluster) -> None:
    first = ok(c, "POST", f"{NS}/configmaps", cm("stale"))
    ok(c, "PUT", f"{NS}/configmaps/stale", {**first, "data": {"a": "2"}})
    code, out = c.request("PUT", f"{NS}/configmaps/stale", {**first, "data": {"a": "3"}})
    assert code == 409 and out["reason"] == "Conflict"


@row
def generation_and_status_split(c: Cluster) -> None:
    made = ok(c, "POST", GIZMOS, gizmo("gen", size=1))
    assert made["metadata"]["generation"] == 1 and "status" not in made
    st = ok(
        c,
        "PATCH",
        f"{GIZMOS}/gen/status",
        {"status": {"observedGeneration": 1}, "spec": {"size": 9}},
        content_type="application/merge-patch+json",
    )
    assert st["metadata"]["generation"] == 1 and st["spec"]["size"] == 1  # status path ignores spec
    up = ok(
        c,
        "PATCH",
        f"{GIZMOS}/gen",
        {"spec": {"size": 2}, "status": {"x": 1}},
        content_type="application/merge-patch+json",
    )
    assert up["metadata"]["generation"] == 2 and up["status"] == {
        "observedGeneration": 1
    }  # main path ignores status
    same = ok(
        c,
        "PATCH",
        f"{GIZMOS}/gen",
        {"metadata": {"labels": {"l": "1"}}},
        content_type="application/merge-patch+json",
    )
    assert same["metadata"]["generation"] == 2


@row
def list_then_watch_from_resource_version(c: Cluster) -> None:
    rv = ok(c, "GET", f"{NS}/configmaps")["metadata"]["resourceVersion"]
    ok(c, "POST", f"{NS}/configmaps", cm("after-list"))
    events = watch_lines(c, f"{NS}/configmaps?watch=true&resourceVersion={rv}", 1)
    assert events[0]["type"] == "ADDED" and events[0]["object"]["metadata"]["name"] == "after-list"


@row
def watch_bookmarks(c: Cluster) -> None:
    rv = ok(c, "GET", f"{NS}/configmaps")["metadata"]["resourceVersion"]
    events = watch_lines(
        c, f"{NS}/secrets?watch=true&allowWatchBookmarks=true&resourceVersion={rv}", 1
    )
    assert events[0]["type"] == "BOOKMARK" and int(
        events[0]["object"]["metadata"]["resourceVersion"]
    ) >= int(rv)


@row
def watch_list_initial_events_end_bookmark(c: Cluster) -> None:
    ok(c, "POST", f"{NS}/serviceaccounts", {"metadata": {"name": "wl"}})
    q = "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"
    events = watch_lines(c, f"{NS}/serviceaccounts?{q}&fieldSelector=metadata.name%3Dwl", 2)
    assert events[0]["type"] == "ADDED"
    assert (
        events[1]["type"] == "BOOKMARK"
        and events[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true"
    )


@row
def watch_too_old_is_410_gone(c: Cluster) -> None:
    store = storage.Store(None, history=2)
    for i in range(4):
        store.put(("", "configmaps", "default", f"x{i}"), cm(f"x{i}"))
    with pytest.raises(storage.TooOld):
        store.watch("", "configmaps", None, 1)
    store.watch("", "configmaps", None, 2)  # still in history


@row
def watch_selector_transitions(c: Cluster) -> None:
    ok(c, "POST", f"{NS}/configmaps", cm("trans", labels={"w": "yes"}))
    rv = ok(c, "GET", f"{NS}/configmaps/trans")["metadata"]["resourceVersion"]

    def relabel() -> None:
        time.sleep(0.3)
        ok(
            c,
            "PATCH",
            f"{NS}/configmaps/trans",
            {"metadata": {"labels": {"w": "no"}}},
            content_type="application/merge-patch+json",
        )

    threading.Thread(target=relabel).start()
    events = watch_lines(
        c, f"{NS}/configmaps?watch=true&labelSelector=w%3Dyes&resourceVersion={rv}", 1
    )
    assert events[0]["type"] == "DELETED"  # stopped matching the selector


@row
def label_selectors(c: Cluster) -> None:
    for name, labels in [
        ("l1", {"t": "a", "e": "1"}),
        ("l2", {"t": "b"}),
        ("l3", {"t": "c", "e": "1"}),
    ]:
        ok(c, "POST", f"{NS}/configmaps", cm(name, labels=labels))

    def names(sel: str) -> list[str]:
        items = ok(c, "GET", f"{NS}/configmaps?labelSelector={urllib.request.quote(sel)}")["items"]
        return [i["metadata"]["name"] for i in items]

    assert names("t in (a,b)") == ["l1", "l2"]
    assert names("t notin (a,b),t") == ["l3"]
    assert names("e,t!=a") == ["l3"]
    assert names("!e,t") == ["l2"]
    code, _ = c.request("GET", f"{NS}/configmaps?labelSelector={urllib.request.quote('t in (a')}")
    assert code == 400


@row
def field_selectors(c: Cluster) -> None:
    ok(
        c,
        "POST",
        f"{NS}/pods",
        {"metadata": {"name": "fs"}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
    )
    assert [
        p["metadata"]["name"]
        for p in ok(c, "GET", "/api/v1/pods?fieldSelector=metadata.name%3Dfs")["items"]
    ] == ["fs"]
    assert ok(c, "GET", f"{NS}/pods?fieldSelector=status.phase%3DPending,metadata.name%3Dfs")[
        "items"
    ]
    assert not ok(c, "GET", f"{NS}/pods?fieldSelector=status.phase!%3DPending,metadata.name%3Dfs")[
        "items"
    ]


@row
def pagination_with_limit_and_continue(c: Cluster) -> None:
    for i in range(5):
        ok(
            c,
            "POST",
            f"{NS}/endpoints",
            {"metadata": {"name": f"page-{i}", "labels": {"page": "1"}}},
        )
    seen, token = [], ""
    while True:
        page = ok(
            c,
            "GET",
            f"{NS}/endpoints?labelSelector=page%3D1&limit=2"
            + (f"&continue={token}" if token else ""),
        )
        seen += [i["metadata"]["name"] for i in page["items"]]
        token = page["metadata"].get("continue", "")
        if not token:
            break
    assert seen == [f"page-{i}" for i in range(5)]


@row
def deletecollection_by_selector(c: Cluster) -> None:
    for i in range(3):
        ok(c, "POST", f"{NS}/configmaps", cm(f"dc-{i}", labels={"dc": "x" if i < 2 else "y"}))
    ok(c, "DELETE", f"{NS}/configmaps?labelSelector=dc%3Dx")
    left = [
        i["metadata"]["name"] for i in ok(c, "GET", f"{NS}/configmaps?labelSelector=dc")["items"]
    ]
    assert left == ["dc-2"]


@row
def json_patch_and_merge_patch(c: Cluster) -> None:
    ok(c, "POST", f"{NS}/configmaps", cm("patchy"))
    out = ok(
        c,
        "PATCH",
        f"{NS}/configmaps/patchy",
        [{"op": "add", "path": "/data/b", "value": "2"}, {"op": "remove", "path": "/data/a"}],
        content_type="application/json-patch+json",
    )
    assert out["data"] == {"b": "2"}
    out = ok(
        c,
        "PATCH",
        f"{NS}/configmaps/patchy",
        {"data": {"b": None, "c": "3"}},
        content_type="application/merge-patch+json",
    )
    assert out["data"] == {"c": "3"}
    code, _ = c.request(
        "PATCH",
        f"{NS}/configmaps/patchy",
        [{"op": "test", "path": "/data/c", "value": "x"}],
        content_type="application/json-patch+json",
    )
    assert code == 422


@row
def strategic_merge_patch_merges_lists_by_key(c: Cluster) -> None:
    pod = {
        "metadata": {"name": "smp"},
        "spec": {
            "containers": [
                {
                    "name": "a",
                    "image": "a:1",
                    "env": [{"name": "X", "value": "1"}],
                    "ports": [{"containerPort": 80}],
                }
            ],
            "volumes": [{"name": "v1", "emptyDir": {}}],
        },
    }
    ok(c, "POST", f"{NS}/pods", pod)
    patch = {
        "spec": {
            "containers": [
                {
                    "name": "a",
                    "env": [{"name": "Y", "value": "2"}],
                    "ports": [{"containerPort": 81}],
                },
                {"name": "b", "image": "b:1"},
            ],
            "volumes": [{"name": "v2", "emptyDir": {}}],
        }
    }
    out = ok(
        c, "PATCH", f"{NS}/pods/smp", patch, content_type="application/strategic-merge-patch+json"
    )
    a = out["spec"]["containers"][0]
    assert [x["name"] for x in out["spec"]["containers"]] == ["a", "b"] and a["image"] == "a:1"
    assert [e["name"] for e in a["env"]] == ["X", "Y"] and [
        p["containerPort"] for p in a["ports"]
    ] == [80, 81]
    assert [v["name"] for v in out["spec"]["volumes"]] == ["v1", "v2"]
    out = ok(
        c,
        "PATCH",
        f"{NS}/pods/smp",
        {"spec": {"containers": [{"name": "b", "$patch": "delete"}]}},
        content_type="application/strategic-merge-patch+json",
    )
    assert [x["name"] for x in out["spec"]["containers"]] == ["a"]
    code, _ = c.request(
        "PATCH",
        f"{GIZMOS}/tab",
        {"spec": {}},
        content_type="application/strategic-merge-patch+json",
    )
    assert code == 415  # as the real server: no strategic merge for custom resources


@row
def server_side_apply_creates_and_tracks_managers(c: Cluster) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "ssa"},
        "data": {"a": "1", "b": "2"},
    }
    out = ok(
        c,
        "PATCH",
        f"{NS}/configmaps/ssa?fieldManager=one",
        body,
        content_type="application/apply-patch+yaml",
    )
    assert (
        out["data"] == {"a": "1", "b": "2"}
        and out["metadata"]["managedFields"][0]["manager"] == "one"
    )
    out = ok(
        c,
        "PATCH",
        f"{NS}/configmaps/ssa?fieldManager=one",
        {**body, "data": {"a": "1"}},
        content_type="application/apply-patch+yaml",
    )
    assert out["data"] == {"a": "1"}  # a field no longer applied is removed
    code, err = c.request(
        "PATCH",
        f"{NS}/configmaps/ssa?fieldManager=two",
        {**body, "data": {"a": "9"}},
        content_type="application/apply-patch+yaml",
    )
    assert code == 409 and err["details"]["causes"][0]["field"] == ".data.a"


@row
def finalizers_hold_deletion(c: Cluster) -> None:
    ok(c, "POST", f"{NS}/configmaps", cm("fin", finalizers=["x/y"]))
    out = ok(c, "DELETE", f"{NS}/configmaps/fin")
    assert out["metadata"]["deletionTimestamp"]
    assert ok(c, "GET", f"{NS}/configmaps/fin")["metadata"]["deletionTimestamp"]
    code, _ = c.request(
        "PATCH",
        f"{NS}/configmaps/fin",
        {"metadata": {"finalizers": ["x/y", "new/one"]}},
        content_type="application/merge-patch+json",
    )
    assert code == 422  # no new finalizers once deleting
    ok(
        c,
        "PATCH",
        f"{NS}/configmaps/fin",
        {"metadata": {"finalizers": None}},
        content_type="application/merge-patch+json",
    )
    assert c.request("GET", f"{NS}/configmaps/fin")[0] == 404


def _owned(c: Cluster, owner: str, dep: str) -> str:
    o = ok(c, "POST", f"{NS}/configmaps", cm(owner))
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": owner,
        "uid": o["metadata"]["uid"],
        "blockOwnerDeletion": True,
    }
    ok(c, "POST", f"{NS}/configmaps", cm(dep, ownerReferences=[ref]))
    return str(o["metadata"]["uid"])


@row
def gc_background(c: Cluster) -> None:
    _owned(c, "own-bg", "dep-bg")
    ok(c, "DELETE", f"{NS}/configmaps/own-bg", {"propagationPolicy": "Background"})
    until(lambda: c.request("GET", f"{NS}/configmaps/dep-bg")[0] == 404)


@row
def gc_orphan(c: Cluster) -> None:
    _owned(c, "own-or", "dep-or")
    ok(c, "DELETE", f"{NS}/configmaps/own-or?propagationPolicy=Orphan")
    until(lambda: c.request("GET", f"{NS}/configmaps/own-or")[0] == 404)
    assert "ownerReferences" not in ok(c, "GET", f"{NS}/configmaps/dep-or")["metadata"]


@row
def gc_foreground(c: Cluster) -> None:
    _owned(c, "own-fg", "dep-fg")
    ok(
        c,
        "PATCH",
        f"{NS}/configmaps/dep-fg",
        {"metadata": {"finalizers": ["hold/it"]}},
        content_type="application/merge-patch+json",
    )
    ok(c, "DELETE", f"{NS}/configmaps/own-fg", {"propagationPolicy": "Foreground"})
    time.sleep(0.3)
    owner = ok(c, "GET", f"{NS}/configmaps/own-fg")
    assert (
        owner["metadata"]["finalizers"] == ["foregroundDeletion"]
        and owner["metadata"]["deletionTimestamp"]
    )
    assert ok(c, "GET", f"{NS}/configmaps/dep-fg")["metadata"]["deletionTimestamp"]
    ok(
        c,
        "PATCH",
        f"{NS}/configmaps/dep-fg",
        {"metadata": {"finalizers": None}},
        content_type="application/merge-patch+json",
    )
    until(lambda: c.request("GET", f"{NS}/configmaps/own-fg")[0] == 404)


@row
def namespace_deletion_cascades(c: Cluster) -> None:
    ok(c, "POST", "/api/v1/namespaces", {"metadata": {"name": "gone"}})
    ok(c, "POST", "/api/v1/namespaces/gone/configmaps", cm("in-gone"))
    ok(c, "POST", "/apis/conf.pot.dev/v1/namespaces/gone/gizmos", gizmo("g"))
    assert ok(c, "DELETE", "/api/v1/namespaces/gone")["status"]["phase"] == "Terminating"
    until(lambda: c.request("GET", "/api/v1/namespaces/gone")[0] == 404)
    code, err = c.request("POST", "/api/v1/namespaces/gone/configmaps", cm("late"))
    assert code == 404 and err["reason"] == "NotFound"


@row
def crd_validation_is_422_with_causes(c: Cluster) -> None:
    code, err = c.request("POST", GIZMOS, gizmo("bad", mode="zzz"))
    assert code == 422 and err["reason"] == "Invalid"
    assert [cause["field"] for cause in err["details"]["causes"]] == ["spec.mode"]  # enum
    code, err = c.request("POST", GIZMOS, gizmo("bad", size=20))
    assert code == 422 and [cause["field"] for cause in err["details"]["causes"]] == [
        "spec"
    ]  # CEL rule
    assert "size must not exceed max" in err["message"]


@row
def crd_defaulting_and_pruning(c: Cluster) -> None:
    out = ok(
        c,
        "POST",
        f"{GIZMOS}?fieldValidation=Ignore",
        {**gizmo("prune"), "spec": {"junk": 1}, "extra": True},
    )
    assert out["spec"] == {"size": 1, "max": 10} and "extra" not in out
    code, err = c.request(
        "POST", f"{GIZMOS}?fieldValidation=Strict", {**gizmo("strict"), "spec": {"junk": 1}}
    )
    assert code == 400 and 'unknown field "spec.junk"' in err["message"]


@row
def scale_subresource(c: Cluster) -> None:
    ok(c, "POST", GIZMOS, gizmo("scaled", replicas=1))
    scale = ok(c, "GET", f"{GIZMOS}/scaled/scale")
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 1
    ok(
        c,
        "PATCH",
        f"{GIZMOS}/scaled/scale",
        {"spec": {"replicas": 4}},
        content_type="application/merge-patch+json",
    )
    assert ok(c, "GET", f"{GIZMOS}/scaled")["spec"]["replicas"] == 4


@row
def pod_binding_and_eviction(c: Cluster) -> None:
    ok(
        c,
        "POST",
        f"{NS}/pods",
        {"metadata": {"name": "bind"}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
    )
    binding = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "bind"},
        "target": {"kind": "Node", "name": "n1"},
    }
    ok(c, "POST", f"{NS}/pods/bind/binding", binding)
    assert ok(c, "GET", f"{NS}/pods/bind")["spec"]["nodeName"] == "n1"
    assert c.request("POST", f"{NS}/pods/bind/binding", binding)[0] == 409
    ok(
        c,
        "POST",
        f"{NS}/pods/bind/eviction",
        {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "bind"}},
    )
    # A bound pod is deleted gracefully: the kubelet confirms with gracePeriodSeconds=0.
    assert ok(c, "GET", f"{NS}/pods/bind")["metadata"]["deletionTimestamp"]
    ok(c, "DELETE", f"{NS}/pods/bind?gracePeriodSeconds=0")
    assert c.request("GET", f"{NS}/pods/bind")[0] == 404


@row
def dry_run_and_generate_name(c: Cluster) -> None:
    made = ok(c, "POST", f"{NS}/configmaps?dryRun=All", cm("dry"))
    assert made["metadata"]["name"] == "dry" and c.request("GET", f"{NS}/configmaps/dry")[0] == 404
    gen = ok(c, "POST", f"{NS}/configmaps", {"metadata": {"generateName": "gen-"}})
    assert gen["metadata"]["name"].startswith("gen-") and len(gen["metadata"]["name"]) == 9


@row
def delete_preconditions(c: Cluster) -> None:
    ok(c, "POST", f"{NS}/configmaps", cm("pre"))
    code, _ = c.request("DELETE", f"{NS}/configmaps/pre", {"preconditions": {"uid": "nope"}})
    assert code == 409


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
