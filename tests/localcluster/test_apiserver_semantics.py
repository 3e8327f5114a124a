"""Table-driven conformance of the local API server, part 2: semantics (issue 3
Deliver 4): resourceVersions, conflicts, watches, selectors, pagination,
patches, server-side apply, finalizers, garbage collection, CRD validation.

Each row is a small function taking the shared server and asserting one
behaviour through raw HTTP, so a failure names exactly what broke.
"""

from __future__ import annotations

import threading
import time
import urllib.request

import pytest

from pot.localcluster import storage
from tests.localcluster.conformance_kit import (
    GIZMOS,
    NS,
    cm,
    gizmo,
    install_crds,
    ok,
    registry,
    until,
    watch_lines,
)
from tests.localcluster.conftest import Cluster

ROWS, row = registry()


@pytest.fixture(scope="module")
def c(apiserver_cluster: Cluster) -> Cluster:
    return install_crds(apiserver_cluster)


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
    # A Deployment's pod template: a real server refuses such changes to a Pod's own spec.
    deployments = "/apis/apps/v1/namespaces/default/deployments"
    pod_spec = {
        "containers": [
            {
                "name": "a",
                "image": "a:1",
                "env": [{"name": "X", "value": "1"}],
                "ports": [{"containerPort": 80}],
            }
        ],
        "volumes": [{"name": "v1", "emptyDir": {}}],
    }
    labels = {"app": "smp"}
    dep = {
        "metadata": {"name": "smp"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
    ok(c, "POST", deployments, dep)
    patch = {
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
    out = ok(
        c,
        "PATCH",
        f"{deployments}/smp",
        {"spec": {"template": {"spec": patch}}},
        content_type="application/strategic-merge-patch+json",
    )["spec"]["template"]
    a = out["spec"]["containers"][0]
    assert [x["name"] for x in out["spec"]["containers"]] == ["a", "b"] and a["image"] == "a:1"
    assert [e["name"] for e in a["env"]] == ["X", "Y"] and [
        p["containerPort"] for p in a["ports"]
    ] == [80, 81]
    assert [v["name"] for v in out["spec"]["volumes"]] == ["v1", "v2"]
    delete = {"containers": [{"name": "b", "$patch": "delete"}]}
    out = ok(
        c,
        "PATCH",
        f"{deployments}/smp",
        {"spec": {"template": {"spec": delete}}},
        content_type="application/strategic-merge-patch+json",
    )["spec"]["template"]
    assert [x["name"] for x in out["spec"]["containers"]] == ["a"]
    ok(c, "POST", GIZMOS, gizmo("smp", size=1))
    code, _ = c.request(
        "PATCH",
        f"{GIZMOS}/smp",
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
    # The collector runs asynchronously: wait for it to reach the dependent.
    until(
        lambda: bool(ok(c, "GET", f"{NS}/configmaps/dep-fg")["metadata"].get("deletionTimestamp"))
    )
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


@pytest.mark.parametrize("name", list(ROWS))
def test_conformance(c: Cluster, name: str) -> None:
    ROWS[name](c)
