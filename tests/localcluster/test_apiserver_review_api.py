"""Regression tests from a review of the API server against real-server semantics:

* an update of an object whose deletion is pending completes the deletion only as
  the real store's ShouldDeleteDuringUpdate does: no finalizers left and no grace
  period running (a pod's kubelet status update in its grace period, or a label on
  a terminating namespace, removed the object at once);
* ObjectMeta fields have the types the real decoder insists on (400): a list of
  labels or an ownerReference that is no object was stored, failed the request
  half-way and made the server unable to replay its log at start;
* one object the garbage collector fails on does not stop it for the others
  (a pod whose terminationGracePeriodSeconds is no number killed its task).
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Any

import pytest

from pot.localcluster import collecting, storage
from tests.localcluster.conformance_kit import MERGE, NS, TABLE, cm, ok, until
from tests.localcluster.conftest import Cluster, start_threaded


@pytest.fixture(scope="module")
def c(apiserver_cluster: Cluster) -> Cluster:
    return apiserver_cluster


def _bound_pod(name: str, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, **meta},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]},
    }


# -- updates during a pending deletion ---------------------------------------------------------


def test_status_update_in_a_pods_grace_period_keeps_the_pod(c: Cluster) -> None:
    ok(c, "POST", f"{NS}/pods", _bound_pod("graceful"))
    gone = ok(c, "DELETE", f"{NS}/pods/graceful")
    assert gone["metadata"]["deletionGracePeriodSeconds"] == 30
    # The kubelet reports status while it stops the containers.
    patch = {"status": {"phase": "Running"}}
    ok(c, "PATCH", f"{NS}/pods/graceful/status", patch, content_type=MERGE)
    ok(c, "PATCH", f"{NS}/pods/graceful", {"metadata": {"labels": {"a": "b"}}}, content_type=MERGE)
    assert c.request("GET", f"{NS}/pods/graceful")[0] == 200
    # Its grace=0 confirmation removes it.
    ok(c, "DELETE", f"{NS}/pods/graceful?gracePeriodSeconds=0")
    assert c.request("GET", f"{NS}/pods/graceful")[0] == 404


def test_pod_confirmed_by_the_kubelet_goes_with_its_last_finalizer(c: Cluster) -> None:
    ok(c, "POST", f"{NS}/pods", _bound_pod("held", finalizers=["pot.dev/hold"]))
    ok(c, "DELETE", f"{NS}/pods/held")
    out = ok(c, "DELETE", f"{NS}/pods/held?gracePeriodSeconds=0")
    assert out["metadata"]["deletionGracePeriodSeconds"] == 0
    ok(c, "PATCH", f"{NS}/pods/held", {"metadata": {"finalizers": None}}, content_type=MERGE)
    assert c.request("GET", f"{NS}/pods/held")[0] == 404


def test_object_held_by_a_finalizer_goes_with_it(c: Cluster) -> None:
    ok(c, "POST", f"{NS}/configmaps", cm("fin", finalizers=["pot.dev/hold"]))
    out = ok(c, "DELETE", f"{NS}/configmaps/fin")
    assert out["metadata"]["deletionGracePeriodSeconds"] == 0
    ok(c, "PATCH", f"{NS}/configmaps/fin", {"metadata": {"labels": {"a": "b"}}}, content_type=MERGE)
    assert c.request("GET", f"{NS}/configmaps/fin")[0] == 200
    ok(c, "PATCH", f"{NS}/configmaps/fin", {"metadata": {"finalizers": []}}, content_type=MERGE)
    assert c.request("GET", f"{NS}/configmaps/fin")[0] == 404


def test_label_on_a_terminating_namespace_keeps_it_until_it_is_empty(c: Cluster) -> None:
    ok(c, "POST", "/api/v1/namespaces", {"metadata": {"name": "winding"}})
    ok(c, "POST", "/api/v1/namespaces/winding/configmaps", cm("held", finalizers=["pot.dev/h"]))
    out = ok(c, "DELETE", "/api/v1/namespaces/winding")
    assert out["metadata"]["deletionGracePeriodSeconds"] == 0
    ok(
        c,
        "PATCH",
        "/api/v1/namespaces/winding",
        {"metadata": {"labels": {"x": "y"}}},
        content_type=MERGE,
    )
    ns = ok(c, "GET", "/api/v1/namespaces/winding")
    assert ns["status"]["phase"] == "Terminating" and ns["metadata"]["labels"]["x"] == "y"
    path = "/api/v1/namespaces/winding/configmaps/held"
    ok(c, "PATCH", path, {"metadata": {"finalizers": None}}, content_type=MERGE)
    until(lambda: c.request("GET", "/api/v1/namespaces/winding")[0] == 404, timeout=30)
    assert c.request("GET", path)[0] == 404


# -- malformed metadata and the garbage collector ----------------------------------------------


@pytest.mark.parametrize(
    "meta",
    [
        {"ownerReferences": ["owner"]},
        {"ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": ["u"]}]},
        {"ownerReferences": "owner"},
        {"labels": ["a"]},
        {"labels": {"a": 1}},
        {"annotations": "a"},
        {"finalizers": "pot.dev/x"},
        {"generateName": 5},
    ],
)
def test_malformed_metadata_is_a_bad_request(c: Cluster, meta: dict[str, Any]) -> None:
    body = cm("malformed", **meta)
    if "generateName" in meta:
        del body["metadata"]["name"]
    code, out = c.request("POST", f"{NS}/configmaps", body)
    assert code == 400 and out["reason"] == "BadRequest", out
    assert "cannot unmarshal" in out["message"]
    assert c.request("GET", f"{NS}/configmaps/malformed")[0] == 404


def test_owner_reference_without_uid_is_invalid(c: Cluster) -> None:
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "o"}
    code, out = c.request("POST", f"{NS}/configmaps", cm("nouid", ownerReferences=[ref]))
    assert code == 422, out
    assert out["details"]["causes"][0]["field"] == "metadata.ownerReferences[0].uid"


def test_server_restarts_after_a_refused_malformed_object(tmp_path: Path) -> None:
    srv, c = start_threaded(tmp_path)
    try:
        code, _ = c.request("POST", f"{NS}/configmaps", cm("bad", ownerReferences=["x"]))
        assert code == 400
        ok(c, "POST", f"{NS}/configmaps", cm("good"))
    finally:
        srv.stop()
    srv, c = start_threaded(tmp_path)
    try:
        names = [o["metadata"]["name"] for o in ok(c, "GET", f"{NS}/configmaps")["items"]]
        assert names == ["good"]
    finally:
        srv.stop()


def test_a_pod_the_collector_cannot_read_does_not_stop_collection(c: Cluster) -> None:
    ok(c, "POST", "/api/v1/namespaces", {"metadata": {"name": "oddpods"}})
    pod = _bound_pod("odd")
    pod["spec"]["terminationGracePeriodSeconds"] = "soon"
    ok(c, "POST", "/api/v1/namespaces/oddpods/pods", pod)
    ok(c, "DELETE", "/api/v1/namespaces/oddpods")
    owner = ok(c, "POST", f"{NS}/configmaps", cm("gc-owner"))
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "gc-owner"}
    ref["uid"] = owner["metadata"]["uid"]
    ok(c, "POST", f"{NS}/configmaps", cm("gc-dep", ownerReferences=[ref]))
    ok(c, "DELETE", f"{NS}/configmaps/gc-owner")
    until(lambda: c.request("GET", f"{NS}/configmaps/gc-dep")[0] == 404, timeout=10)
    # The pod itself is deleted gracefully (30 s default), like any bound pod.
    out = ok(c, "GET", "/api/v1/namespaces/oddpods/pods/odd")
    assert out["metadata"]["deletionGracePeriodSeconds"] == 30
    code, _ = c.request("DELETE", "/api/v1/namespaces/oddpods/pods/odd?gracePeriodSeconds=x")
    assert code == 400


# -- RBAC: list and watch pinned to one name --------------------------------------------------


def test_rbac_list_and_watch_pinned_to_a_name_match_resource_names(tmp_path: Path) -> None:
    srv, c = start_threaded(tmp_path, authorization="RBAC")
    try:
        assert srv.server is not None
        tokens = srv.server.gate.tokens
        admin = {"Authorization": f"Bearer {tokens.admin()}"}
        rules = [
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": ["mine"],
                "verbs": ["get", "list", "watch", "delete"],
            }
        ]
        for path, body in (
            (f"{NS}/serviceaccounts", {"metadata": {"name": "one"}}),
            (f"{NS}/configmaps", cm("mine")),
            (
                "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
                {"metadata": {"name": "one-cm"}, "rules": rules},
            ),
            (
                "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
                {
                    "metadata": {"name": "one-cm"},
                    "roleRef": {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "Role",
                        "name": "one-cm",
                    },
                    "subjects": [{"kind": "ServiceAccount", "name": "one"}],
                },
            ),
        ):
            code, out = c.request("POST", path, body, headers=admin)
            assert code == 201, out
        sa = {"Authorization": f"Bearer {tokens.service_account('default', 'one')}"}
        mine = f"{NS}/configmaps?fieldSelector=metadata.name%3Dmine"
        # What kubectl get configmap mine -w and kubectl delete --wait send.
        assert c.request("GET", mine, headers=sa)[0] == 200
        assert c.request("GET", mine + "&watch=true&timeoutSeconds=1", headers=sa)[0] == 200
        assert c.request("GET", f"{NS}/configmaps/mine", headers=sa)[0] == 200
        # Unpinned, or pinned to another name, the list stays forbidden.
        assert c.request("GET", f"{NS}/configmaps", headers=sa)[0] == 403
        other = f"{NS}/configmaps?fieldSelector=metadata.name%3Dother"
        assert c.request("GET", other, headers=sa)[0] == 403
        # A watch spelled watch=True is a watch for RBAC too (the server serves it as one).
        code, out = c.request("GET", f"{NS}/configmaps?watch=True", headers=sa)
        assert code == 403 and "cannot watch" in out["message"], out
    finally:
        srv.stop()


# -- the all-namespaces path and query parameters ---------------------------------------------


def test_all_namespaces_path_refuses_deletecollection_and_create(c: Cluster) -> None:
    ok(c, "POST", "/api/v1/namespaces/kube-system/configmaps", cm("keep-me"))
    code, out = c.request("DELETE", "/api/v1/configmaps")
    assert code == 405 and out["reason"] == "MethodNotAllowed", out
    assert c.request("GET", "/api/v1/namespaces/kube-system/configmaps/keep-me")[0] == 200
    code, out = c.request("POST", "/api/v1/configmaps", cm("nowhere", namespace="default"))
    assert code == 405, out
    # The namespaced path still deletes its own namespace's objects only.
    ok(c, "POST", f"{NS}/configmaps", cm("sweep-me", labels={"sweep": "yes"}))
    ok(c, "DELETE", f"{NS}/configmaps?labelSelector=sweep%3Dyes")
    assert c.request("GET", f"{NS}/configmaps/sweep-me")[0] == 404


@pytest.mark.parametrize(
    "query",
    [
        "limit=abc",
        "limit=-1",
        "watch=true&timeoutSeconds=soon",
        "continue=" + base64.urlsafe_b64encode(b'{"after": 5, "rv": 1}').decode(),
    ],
)
def test_bad_list_parameters_are_a_bad_request(c: Cluster, query: str) -> None:
    code, out = c.request("GET", f"{NS}/configmaps?{query}")
    assert code == 400 and out["reason"] == "BadRequest", out


# -- tables -------------------------------------------------------------------------------------


def test_a_malformed_built_in_does_not_fail_the_whole_table(c: Cluster) -> None:
    odd = {"metadata": {"name": "odd-node"}, "status": {"conditions": "x", "addresses": "x"}}
    ok(c, "POST", "/api/v1/nodes", odd)
    ok(c, "POST", "/api/v1/nodes", {"metadata": {"name": "fine-node"}})
    table = ok(c, "GET", "/api/v1/nodes", headers={"Accept": TABLE})
    rows = {r["cells"][0]: r["cells"] for r in table["rows"]}
    assert set(rows) >= {"odd-node", "fine-node"}
    assert "<unknown>" in rows["odd-node"]


def test_protobuf_bytes_that_do_not_decode_are_a_bad_request(c: Cluster) -> None:
    raw = b"k8s\x00\n\xf36e\x1c\xcd-\x90\x12\x9a}\x06\x00\x02{\xda\x813\x83"
    code, out = c.request(
        "POST", f"{NS}/configmaps", raw=raw, content_type="application/vnd.kubernetes.protobuf"
    )
    assert code == 400 and out["reason"] == "BadRequest", out


# -- event expiry -------------------------------------------------------------------------------


def _event(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name},
        "involvedObject": {"kind": "ConfigMap", "name": "x", "namespace": "default"},
        "reason": "Test",
        "message": "m",
        "type": "Normal",
        **fields,
    }


def test_event_written_is_its_latest_reported_time() -> None:
    ev = _event("e", lastTimestamp="2030-01-01T00:00:00Z", firstTimestamp="2020-01-01T00:00:00Z")
    ev["metadata"]["creationTimestamp"] = "2025-01-01T00:00:00Z"
    assert collecting.event_written(ev) == collecting._epoch("2030-01-01T00:00:00Z")
    ev = _event("e", eventTime="2026-01-01T00:00:00.000001Z", lastTimestamp=None)
    ev["metadata"]["creationTimestamp"] = "2025-01-01T00:00:00Z"
    assert collecting.event_written(ev) == collecting._epoch("2026-01-01T00:00:00.000001Z")


def test_events_expire_after_the_event_ttl(tmp_path: Path) -> None:
    srv, c = start_threaded(tmp_path)
    try:
        assert srv.server is not None and srv.server.collector is not None
        collector = srv.server.collector
        assert collector.event_ttl == 3600.0  # kube-apiserver's default --event-ttl
        ok(c, "POST", f"{NS}/events", _event("recent"))
        ok(c, "POST", f"{NS}/configmaps", cm("stays"))
        collector.event_ttl, collector.expiry_every = 1.0, 0.2
        ok(c, "POST", f"{NS}/configmaps", cm("wake"))
        until(lambda: c.request("GET", f"{NS}/events/recent")[0] == 404, timeout=15)
        assert c.request("GET", f"{NS}/configmaps/stays")[0] == 200
    finally:
        srv.stop()


# -- CRDs ---------------------------------------------------------------------------------------


def test_a_crds_scope_is_immutable(c: Cluster) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "scoped.review.pot.dev"},
        "spec": {
            "group": "review.pot.dev",
            "scope": "Namespaced",
            "names": {"plural": "scoped", "singular": "scope", "kind": "Scoped"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }
    crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    ok(c, "POST", crds, crd)
    path = "/apis/review.pot.dev/v1/namespaces/default/scoped"
    until(lambda: c.request("GET", path)[0] == 200, timeout=30)
    ok(
        c,
        "POST",
        path,
        {"apiVersion": "review.pot.dev/v1", "kind": "Scoped", "metadata": {"name": "a"}},
    )
    patch = {"spec": {"scope": "Cluster"}}
    code, out = c.request("PATCH", f"{crds}/scoped.review.pot.dev", patch, content_type=MERGE)
    assert code == 422, out
    assert out["details"]["causes"][0]["field"] == "spec.scope"
    assert c.request("GET", f"{path}/a")[0] == 200
    # Other changes still go through.
    patch = {"spec": {"names": {"shortNames": ["sc"]}}}
    ok(c, "PATCH", f"{crds}/scoped.review.pot.dev", patch, content_type=MERGE)


# -- namespaces the real server never deletes ---------------------------------------------------


@pytest.mark.parametrize("name", ["default", "kube-system", "kube-public"])
def test_system_namespaces_may_not_be_deleted(c: Cluster, name: str) -> None:
    code, out = c.request("DELETE", f"/api/v1/namespaces/{name}")
    assert code == 403 and out["reason"] == "Forbidden", out
    assert out["message"] == f'namespaces "{name}" is forbidden: this namespace may not be deleted'
    ns = ok(c, "GET", f"/api/v1/namespaces/{name}")
    assert "deletionTimestamp" not in ns["metadata"] and ns["status"]["phase"] == "Active"


def test_kubectl_delete_namespace_default_is_refused(c: Cluster) -> None:
    ok(c, "POST", f"{NS}/configmaps", cm("survivor"))
    out = c.kubectl("delete", "namespace", "default", check=False)
    assert out.returncode != 0
    assert "this namespace may not be deleted" in out.stderr
    assert c.request("GET", f"{NS}/configmaps/survivor")[0] == 200


def test_delete_preconditions_that_are_no_object_are_ignored(c: Cluster) -> None:
    ok(c, "POST", f"{NS}/configmaps", cm("odd-pre"))
    code, out = c.request("DELETE", f"{NS}/configmaps/odd-pre", {"preconditions": "x"})
    assert code == 200, out


# -- Services keep their ClusterIP ----------------------------------------------------------------


def test_an_update_without_cluster_ip_keeps_the_allocated_one(c: Cluster) -> None:
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "steady"},
        "spec": {"selector": {"a": "b"}, "ports": [{"port": 80}]},
    }
    made = ok(c, "POST", f"{NS}/services", svc)
    ip = made["spec"]["clusterIP"]
    ok(c, "POST", f"{NS}/services", {**svc, "metadata": {"name": "other"}})
    ok(c, "DELETE", f"{NS}/services/other")  # so the next free address differs
    # kubectl replace -f / the python client's replace_namespaced_service: no clusterIP.
    out = ok(c, "PUT", f"{NS}/services/steady", {**svc, "metadata": {"name": "steady"}})
    assert out["spec"]["clusterIP"] == ip and out["spec"]["clusterIPs"] == [ip]
    # An ExternalName Service has none.
    external = {**svc, "spec": {"type": "ExternalName", "externalName": "example.com"}}
    out = ok(c, "PUT", f"{NS}/services/steady", external)
    assert "clusterIP" not in out["spec"], out["spec"]


# -- the watch history is bounded in time ---------------------------------------------------------


def test_watch_history_beyond_the_last_keep_events_is_bounded_in_time() -> None:
    assert storage.Store(None)._window == 900.0  # a day of writes is not kept
    store = storage.Store(None, keep=2, window=0.05)
    for i in range(5):
        store.put(("", "configmaps", "default", f"h{i}"), cm(f"h{i}"))
    first = store.rv - 4
    store.watch("", "configmaps", None, first)  # young events stay, however many
    time.sleep(0.1)
    store.put(("", "configmaps", "default", "late"), cm("late"))
    # The last `keep` events stay resumable; older ones are gone (410, a relist).
    assert store.oldest == store.rv - 2
    with pytest.raises(storage.TooOld):
        store.watch("", "configmaps", None, first)
    w = store.watch("", "configmaps", None, store.rv - 2)
    assert [ev.key[3] for ev in _drain(w)] == ["h4", "late"]


def _drain(w: storage.Watcher) -> list[storage.Event]:
    out = []
    while not w.queue.empty():
        ev = w.queue.get_nowait()
        assert ev is not None
        out.append(ev)
    return out


def test_a_watcher_that_stops_reading_is_closed_not_fed_for_ever() -> None:
    store = storage.Store(None)
    assert store.max_backlog == 20_000
    store.max_backlog = 3
    for i in range(2):
        store.put(("", "configmaps", "default", f"b{i}"), cm(f"b{i}"))
    w = store.watch("", "configmaps", None, store.rv - 2)  # a replay of 2, then 3 more
    for i in range(2, 8):
        store.put(("", "configmaps", "default", f"b{i}"), cm(f"b{i}"))
    assert store.watcher_count == 0
    items = []
    while not w.queue.empty():
        items.append(w.queue.get_nowait())
    assert items[-1] is None  # the stream ends; the client resumes from b4's revision
    assert [ev.key[3] for ev in items[:-1] if ev is not None] == ["b0", "b1", "b2", "b3", "b4"]


# -- what updates of built-ins may not change ------------------------------------------------------


def _sts(name: str, **spec: Any) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "serviceName": name,
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
            **spec,
        },
    }


def test_statefulset_spec_beyond_the_mutable_fields_is_immutable(c: Cluster) -> None:
    path = "/apis/apps/v1/namespaces/default/statefulsets"
    ok(c, "POST", path, _sts("frozen"))
    claim = {"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}
    patch = {"spec": {"volumeClaimTemplates": [claim]}}
    code, out = c.request("PATCH", f"{path}/frozen", patch, content_type=MERGE)
    assert code == 422 and out["reason"] == "Invalid", out
    assert "updates to statefulset spec for fields other than 'replicas'" in out["message"]
    assert out["details"]["causes"][0]["field"] == "spec"
    # What may change still does (the operator's own JSON patch).
    ops = [
        {"op": "add", "path": "/spec/replicas", "value": 3},
        {"op": "add", "path": "/spec/template/spec/containers/0/image", "value": "busybox:2"},
    ]
    out = ok(c, "PATCH", f"{path}/frozen", ops, content_type="application/json-patch+json")
    assert out["spec"]["replicas"] == 3


def test_deployment_selector_and_job_template_are_immutable(c: Cluster) -> None:
    path = "/apis/apps/v1/namespaces/default/deployments"
    dep = _sts("fixed")
    dep["kind"] = "Deployment"
    del dep["spec"]["serviceName"]
    ok(c, "POST", path, dep)
    patch = {"spec": {"selector": {"matchLabels": {"app": "fixed", "x": "y"}}}}
    code, out = c.request("PATCH", f"{path}/fixed", patch, content_type=MERGE)
    assert code == 422 and out["details"]["causes"][0]["field"] == "spec.selector", out
    ok(c, "PATCH", f"{path}/fixed", {"spec": {"replicas": 2}}, content_type=MERGE)
    jobs = "/apis/batch/v1/namespaces/default/jobs"
    tmpl = {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"}}
    ok(c, "POST", jobs, {**job, "spec": {"template": tmpl}})
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "c", "command": ["true"]}]}}}}
    code, out = c.request("PATCH", f"{jobs}/once", patch, content_type=MERGE)
    assert code == 422 and out["details"]["causes"][0]["field"] == "spec.template", out
    ok(c, "PATCH", f"{jobs}/once", {"metadata": {"labels": {"a": "b"}}}, content_type=MERGE)


def test_pod_updates_change_only_what_a_real_server_allows(c: Cluster) -> None:
    pod = _bound_pod("strict")
    del pod["spec"]["nodeName"]
    pod["spec"]["schedulingGates"] = [{"name": "pot.dev/gang"}]
    ok(c, "POST", f"{NS}/pods", pod)
    path = f"{NS}/pods/strict"
    patch = {"spec": {"containers": [{"name": "c", "image": "busybox", "command": ["x"]}]}}
    code, out = c.request("PATCH", path, patch, content_type=MERGE)
    assert code == 422 and "pod updates may not change fields" in out["message"], out
    code, out = c.request("PATCH", path, {"spec": {"nodeName": "n2"}}, content_type=MERGE)
    assert code == 422, out
    gates = {"spec": {"schedulingGates": [{"name": "pot.dev/gang"}, {"name": "other"}]}}
    code, out = c.request("PATCH", path, gates, content_type=MERGE)
    assert code == 422 and "found new scheduling gate 'other'" in out["message"], out
    # Allowed: a new image, added tolerations, labels, and the gang release (gates removed).
    image = {"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}}
    ok(c, "PATCH", path, image, content_type="application/strategic-merge-patch+json")
    toleration = {"spec": {"tolerations": [{"key": "k", "operator": "Exists"}]}}
    ok(c, "PATCH", path, toleration, content_type=MERGE)
    ok(c, "PATCH", path, {"metadata": {"labels": {"a": "b"}}}, content_type=MERGE)
    out = ok(c, "PATCH", path, {"spec": {"schedulingGates": None}}, content_type=MERGE)
    assert "schedulingGates" not in out["spec"]
    # The scheduler's binding still sets nodeName.
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "strict"}}
    code, _ = c.request("POST", f"{path}/binding", {**binding, "target": {"name": "n1"}})
    assert code == 201
    assert ok(c, "GET", path)["spec"]["nodeName"] == "n1"
