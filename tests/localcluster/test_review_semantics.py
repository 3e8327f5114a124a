"""Regression tests for places where the local API server (and the kubelet's
crash cleanup) differed from a real cluster in ways a client could depend on:

* a watch BOOKMARK never claims a resourceVersion whose event it has not sent
  (a write gets its revision before its fsync; its event follows the fsync);
* every page of a paginated list carries the first page's resourceVersion;
* a create that carries ``metadata.resourceVersion`` is refused (etcd3's 500);
* field selectors name only the fields the real server supports (400 otherwise);
* ``containers.kill_marked`` also kills what a listed process forked meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pot.localcluster import containers
from tests.localcluster.conformance_kit import MERGE, NS, cm, install_crds, ok, watch_lines
from tests.localcluster.conftest import Cluster, start_threaded


def _until(pred: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def c(apiserver_cluster: Cluster) -> Cluster:
    return install_crds(apiserver_cluster)


# -- watch bookmarks ------------------------------------------------------------------------


def test_bookmark_never_claims_an_unsent_event(tmp_path: Path) -> None:
    """Hold the fsync of one write; bookmarks sent meanwhile must stay below its revision,
    or a client resuming from the bookmark (kopf, client-go) never sees that write."""
    srv, cluster = start_threaded(tmp_path)  # bookmarks every second
    try:
        assert srv.server is not None
        store = srv.server.store
        release = asyncio.Event()
        original = store._sync_loop

        async def held_sync() -> None:
            await release.wait()
            await original()

        store._sync_loop = held_sync  # type: ignore[method-assign]
        rv0 = ok(cluster, "GET", f"{NS}/configmaps")["metadata"]["resourceVersion"]
        url = (
            f"{cluster.url}{NS}/configmaps?watch=true&allowWatchBookmarks=true"
            f"&resourceVersion={rv0}&timeoutSeconds=60"
        )
        events: list[dict[str, Any]] = []
        writer = threading.Thread(
            target=cluster.request, args=("POST", f"{NS}/configmaps", cm("held-write"))
        )
        with urllib.request.urlopen(url, timeout=60) as resp:
            lines = iter(resp)
            assert json.loads(next(lines))["type"] == "BOOKMARK"  # the watch is established
            writer.start()
            _until(lambda: store.rv > int(rv0))  # written, not yet durable nor published
            after_write = 0
            for line in lines:
                events.append(json.loads(line))
                after_write += events[-1]["type"] == "BOOKMARK"
                if after_write == 3:  # at least two were sent after the write
                    break
            srv.loop.call_soon_threadsafe(release.set)
            for line in lines:
                events.append(json.loads(line))
                if events[-1]["type"] == "ADDED":
                    break
        writer.join(30)
    finally:
        srv.stop()
    added = int(events[-1]["object"]["metadata"]["resourceVersion"])
    assert events[-1]["type"] == "ADDED" and added == store.rv
    marks = [int(e["object"]["metadata"]["resourceVersion"]) for e in events[:-1]]
    assert marks and all(rv < added for rv in marks), (marks, added)


# -- pagination ------------------------------------------------------------------------------


def test_paginated_list_pages_share_the_first_resource_version(c: Cluster) -> None:
    for name in ("pg-a", "pg-b", "pg-c"):
        ok(c, "POST", f"{NS}/configmaps", cm(name, labels={"pg": "yes"}))
    first = ok(c, "GET", f"{NS}/configmaps?labelSelector=pg%3Dyes&limit=2")
    rv = first["metadata"]["resourceVersion"]
    assert [i["metadata"]["name"] for i in first["items"]] == ["pg-a", "pg-b"]
    # pg-a changes while the client pages: the next page must not hide that change.
    ok(c, "PATCH", f"{NS}/configmaps/pg-a", {"data": {"a": "2"}}, content_type=MERGE)
    token = urllib.parse.quote(first["metadata"]["continue"])
    second = ok(c, "GET", f"{NS}/configmaps?labelSelector=pg%3Dyes&limit=2&continue={token}")
    assert [i["metadata"]["name"] for i in second["items"]] == ["pg-c"]
    assert second["metadata"]["resourceVersion"] == rv
    assert not second["metadata"].get("continue")
    # A watch from the list's revision (what informers do) replays the change.
    seen = watch_lines(
        c, f"{NS}/configmaps?watch=true&labelSelector=pg%3Dyes&resourceVersion={rv}", 1
    )
    assert seen[0]["type"] == "MODIFIED" and seen[0]["object"]["metadata"]["name"] == "pg-a"


def test_continue_token_is_validated(c: Cluster) -> None:
    bad = base64.urlsafe_b64encode(b'{"after": ["default", "a"], "rv": "x"}').decode()
    code, out = c.request("GET", f"{NS}/configmaps?limit=1&continue={bad}")
    assert code == 400 and out["reason"] == "BadRequest"


# -- create with a resourceVersion ---------------------------------------------------------


def test_create_with_resource_version_is_refused(c: Cluster) -> None:
    body = cm("with-rv")
    body["metadata"]["resourceVersion"] = "7"
    code, out = c.request("POST", f"{NS}/configmaps", body)
    assert code == 500 and out["reason"] == "InternalError", out
    assert "resourceVersion should not be set on objects to be created" in out["message"]
    assert c.request("GET", f"{NS}/configmaps/with-rv")[0] == 404
    # Server-side apply of a body copied from a GET still creates (the server drops it).
    code, _ = c.request(
        "PATCH",
        f"{NS}/configmaps/with-rv?fieldManager=t",
        body,
        content_type="application/apply-patch+yaml",
    )
    assert code == 201


# -- field selectors -------------------------------------------------------------------------

SELECTABLE_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "paints.sel.pot.dev"},
    "spec": {
        "group": "sel.pot.dev",
        "scope": "Namespaced",
        "names": {"plural": "paints", "kind": "Paint"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "selectableFields": [{"jsonPath": ".spec.color"}],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "color": {"type": "string"},
                                    "size": {"type": "integer"},
                                },
                            }
                        },
                    }
                },
            }
        ],
    },
}
PAINTS = "/apis/sel.pot.dev/v1/namespaces/default/paints"


@pytest.mark.parametrize(
    "path",
    [
        f"{NS}/configmaps?fieldSelector=data.a%3D1",
        f"{NS}/configmaps?watch=true&fieldSelector=data.a%3D1",
        f"{NS}/pods?fieldSelector=spec.containers%3Dx",
        "/apis/conf.pot.dev/v1/namespaces/default/gizmos?fieldSelector=spec.size%3D1",
        f"{PAINTS}?fieldSelector=spec.size%3D1",
    ],
)
def test_unsupported_field_label_is_400(c: Cluster, path: str) -> None:
    if "paints" in path:
        _paints(c)
    code, out = c.request("GET", path)
    assert code == 400 and out["reason"] == "BadRequest", out
    assert out["message"].startswith("field label not supported: "), out


def _paints(c: Cluster) -> None:
    if c.request("GET", f"{PAINTS}/red")[0] == 200:
        return
    ok(c, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", SELECTABLE_CRD)
    for name, color in (("red", "red"), ("blue", "blue")):
        body = {"apiVersion": "sel.pot.dev/v1", "kind": "Paint", "metadata": {"name": name}}
        ok(c, "POST", PAINTS, {**body, "spec": {"color": color, "size": 1}})


def test_supported_field_labels_still_select(c: Cluster) -> None:
    _paints(c)
    got = ok(c, "GET", f"{PAINTS}?fieldSelector=spec.color%3Dred")["items"]
    assert [i["metadata"]["name"] for i in got] == ["red"]
    ok(c, "GET", f"{NS}/pods?fieldSelector=spec.nodeName%3Dn,status.phase!%3DFailed")
    ok(c, "GET", f"{NS}/events?fieldSelector=involvedObject.name%3Dx,involvedObject.uid%3Dy")
    ok(c, "GET", "/api/v1/nodes?fieldSelector=spec.unschedulable%3Dfalse")
    ok(c, "GET", f"{NS}/configmaps?fieldSelector=metadata.name%3Dx,metadata.namespace%3Ddefault")


# -- crash cleanup -------------------------------------------------------------------------


@pytest.fixture
def forked_tree() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    tag = f"review-{os.getpid()}-{time.monotonic_ns()}"
    env = {**os.environ, containers.MARKER: tag}
    proc = subprocess.Popen(["/bin/sh", "-c", "sleep 60 & wait"], env=env, start_new_session=True)
    try:
        yield tag, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the shell's group: the sleep too
        proc.wait(10)


def test_kill_marked_also_kills_what_a_listed_process_forked(
    forked_tree: tuple[str, subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    tag, proc = forked_tree
    _until(lambda: len(containers.marked_pids(tag)) == 2)  # the shell and its sleep
    real_scan = containers.marked_pids
    calls = {"n": 0}

    def racing_scan(t: str) -> list[int]:
        # The first scan ran just before the shell forked: it lists the shell alone.
        calls["n"] += 1
        return [proc.pid] if calls["n"] == 1 else real_scan(t)

    monkeypatch.setattr(containers, "marked_pids", racing_scan)
    containers.kill_marked(tag, wait_s=10)
    monkeypatch.undo()
    assert containers.marked_pids(tag) == [], "a forked child of a killed container survived"


# -- eviction and PodDisruptionBudgets ----------------------------------------------------


def _pod(c: Cluster, name: str, app: str, owner: dict[str, Any] | None, ready: bool) -> None:
    meta: dict[str, Any] = {"name": name, "labels": {"app": app}}
    if owner is not None:
        meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "controller": True,
            }
        ]
    spec = {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}
    ok(c, "POST", f"{NS}/pods", {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
    status = {"phase": "Running", "conditions": [{"type": "Ready", "status": str(ready)}]}
    ok(c, "PATCH", f"{NS}/pods/{name}/status", {"status": status}, content_type=MERGE)


def _pdb(c: Cluster, app: str, **spec: Any) -> None:
    body = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": app},
        "spec": {"selector": {"matchLabels": {"app": app}}, **spec},
    }
    ok(c, "POST", "/apis/policy/v1/namespaces/default/poddisruptionbudgets", body)


def _evict(c: Cluster, name: str) -> tuple[int, Any]:
    body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}}
    return c.request("POST", f"{NS}/pods/{name}/eviction", body)


def test_eviction_respects_the_disruption_budget(c: Cluster) -> None:
    sts = ok(
        c,
        "POST",
        "/apis/apps/v1/namespaces/default/statefulsets",
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "quorum"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "quorum"}},
                "template": {
                    "metadata": {"labels": {"app": "quorum"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                },
            },
        },
    )
    _pdb(c, "quorum", maxUnavailable=1)
    for i in range(3):
        _pod(c, f"quorum-{i}", "quorum", sts, ready=True)
    code, _ = _evict(c, "quorum-0")
    assert code == 201
    assert ok(c, "GET", f"{NS}/pods/quorum-0")["metadata"]["deletionTimestamp"]
    code, out = _evict(c, "quorum-1")  # one is already going: the budget is spent
    assert code == 429 and out["reason"] == "TooManyRequests", out
    assert out["details"]["causes"][0]["reason"] == "DisruptionBudget"
    assert "needs 2 healthy pods and has 2 currently" in out["details"]["causes"][0]["message"]
    assert not ok(c, "GET", f"{NS}/pods/quorum-1")["metadata"].get("deletionTimestamp")


def test_eviction_without_a_controller_is_refused_by_max_unavailable(c: Cluster) -> None:
    _pdb(c, "bare", maxUnavailable=1)
    _pod(c, "bare-0", "bare", None, ready=True)
    _pod(c, "bare-1", "bare", None, ready=True)
    assert _evict(c, "bare-0")[0] == 429
    # An unready pod may go while the budget is met (minAvailable counts the pods).
    _pdb(c, "loose", minAvailable=1)
    _pod(c, "loose-0", "loose", None, ready=True)
    _pod(c, "loose-1", "loose", None, ready=False)
    assert _evict(c, "loose-1")[0] == 201
    assert _evict(c, "loose-0")[0] == 429


# -- terminating namespaces ------------------------------------------------------------------


def test_create_in_a_terminating_namespace_names_the_object(c: Cluster) -> None:
    ok(c, "POST", "/api/v1/namespaces", {"metadata": {"name": "closing"}})
    held = cm("held", finalizers=["pot.dev/hold"])
    ok(c, "POST", "/api/v1/namespaces/closing/configmaps", held)
    ok(c, "DELETE", "/api/v1/namespaces/closing")
    code, out = c.request("POST", "/api/v1/namespaces/closing/configmaps", cm("late"))
    assert code == 403 and out["reason"] == "Forbidden", out
    assert out["message"] == (
        'configmaps "late" is forbidden: unable to create new content in namespace closing '
        "because it is being terminated"
    )
    assert out["details"]["causes"][0]["reason"] == "NamespaceTerminating"
    ok(
        c,
        "PATCH",
        "/api/v1/namespaces/closing/configmaps/held",
        {"metadata": {"finalizers": None}},
        content_type=MERGE,
    )
    _until(lambda: c.request("GET", "/api/v1/namespaces/closing")[0] == 404)


# -- binding -------------------------------------------------------------------------------


def test_binding_is_one_write(c: Cluster) -> None:
    spec = {"containers": [{"name": "c", "image": "busybox"}]}
    ok(
        c,
        "POST",
        f"{NS}/pods",
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bindme"}, "spec": spec},
    )
    unsched = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
    made = ok(
        c,
        "PATCH",
        f"{NS}/pods/bindme/status",
        {"status": {"conditions": [unsched]}},
        content_type=MERGE,
    )
    rv = made["metadata"]["resourceVersion"]
    body = {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": "bindme"},
        "target": {"name": "n1"},
    }
    code, _ = c.request("POST", f"{NS}/pods/bindme/binding", body)
    assert code == 201
    first = watch_lines(
        c, f"{NS}/pods?watch=true&fieldSelector=metadata.name%3Dbindme&resourceVersion={rv}", 1
    )[0]["object"]
    assert first["spec"]["nodeName"] == "n1"
    conds = {x["type"]: x["status"] for x in first["status"]["conditions"]}
    assert conds["PodScheduled"] == "True", first["status"]
