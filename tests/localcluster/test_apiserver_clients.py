"""The official ``kubernetes`` client and a kopf operator against the local API server."""

from __future__ import annotations

import contextlib
import json
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import kopf
import kopf.testing
import kubernetes
import pytest
from kubernetes.client.rest import ApiException

from tests.localcluster.conftest import Cluster

pytestmark = pytest.mark.slow

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.pot.dev"},
    "spec": {
        "group": "test.pot.dev",
        "scope": "Namespaced",
        "names": {
            "plural": "widgets",
            "singular": "widget",
            "kind": "Widget",
            "shortNames": ["wd"],
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1, "default": 1}
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


@pytest.fixture(scope="module")
def api(apiserver_cluster: Cluster) -> kubernetes.client.ApiClient:
    apiserver_cluster.kubectl("apply", "-f", "-", input=json.dumps(WIDGET_CRD))
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(apiserver_cluster.kubeconfig), client_configuration=config
    )
    client = kubernetes.client.ApiClient(config)
    yield client
    client.close()


def test_list_watch_patch_with_the_python_client(api: kubernetes.client.ApiClient) -> None:
    core = kubernetes.client.CoreV1Api(api)
    core.create_namespaced_config_map(
        "default", {"metadata": {"name": "py-a", "labels": {"t": "py"}}, "data": {"k": "1"}}
    )
    listed = core.list_namespaced_config_map("default", label_selector="t=py")
    assert [c.metadata.name for c in listed.items] == ["py-a"]
    rv = listed.metadata.resource_version
    events: list[tuple[str, str]] = []

    def watch() -> None:
        w = kubernetes.watch.Watch()
        for ev in w.stream(
            core.list_namespaced_config_map,
            "default",
            label_selector="t=py",
            resource_version=rv,
            timeout_seconds=5,
        ):
            events.append((ev["type"], ev["object"].metadata.name))
            if len(events) == 3:
                w.stop()

    t = threading.Thread(target=watch)
    t.start()
    time.sleep(0.5)
    core.patch_namespaced_config_map(
        "py-a", "default", {"data": {"k": "2"}}
    )  # strategic merge patch
    core.create_namespaced_config_map(
        "default", {"metadata": {"name": "py-b", "labels": {"t": "py"}}}
    )
    core.delete_namespaced_config_map("py-b", "default")
    t.join(10)
    assert events == [("MODIFIED", "py-a"), ("ADDED", "py-b"), ("DELETED", "py-b")]
    # Optimistic concurrency: a stale resourceVersion is refused with 409.
    stale = listed.items[0]
    with pytest.raises(ApiException) as exc:
        core.replace_namespaced_config_map("py-a", "default", stale)
    assert exc.value.status == 409


def test_custom_objects_defaulting_and_validation(api: kubernetes.client.ApiClient) -> None:
    co = kubernetes.client.CustomObjectsApi(api)
    body = {
        "apiVersion": "test.pot.dev/v1",
        "kind": "Widget",
        "metadata": {"name": "w0"},
        "spec": {},
    }
    made = co.create_namespaced_custom_object("test.pot.dev", "v1", "default", "widgets", body)
    assert made["spec"] == {"size": 1}  # schema default applied
    with pytest.raises(ApiException) as exc:
        co.create_namespaced_custom_object(
            "test.pot.dev",
            "v1",
            "default",
            "widgets",
            {**body, "metadata": {"name": "w1"}, "spec": {"size": 0}},
        )
    assert exc.value.status == 422
    causes = json.loads(exc.value.body)["details"]["causes"]
    assert causes[0]["field"] == "spec.size"
    patched = co.patch_namespaced_custom_object_status(
        "test.pot.dev", "v1", "default", "widgets", "w0", {"status": {"x": 1}}
    )
    assert patched["status"] == {"x": 1} and patched["metadata"]["generation"] == 1
    patched = co.patch_namespaced_custom_object(
        "test.pot.dev", "v1", "default", "widgets", "w0", {"spec": {"size": 3}}
    )
    assert patched["metadata"]["generation"] == 2 and patched["status"] == {"x": 1}


OPERATOR = """
import os
import kopf

@kopf.on.login()
def login(**kwargs):
    # In-process, kubernetes.config read KUBECONFIG at import: use kopf's own reader.
    return kopf.login_with_kubeconfig(**kwargs)

@kopf.on.startup()
def configure(settings, **_):
    settings.posting.loggers = True  # kopf 1.45 posts log lines as Events only when asked
    settings.watching.server_timeout = 10
    settings.persistence.finalizer = "test.pot.dev/kopf"

@kopf.on.create("test.pot.dev", "v1", "widgets")
def created(body, spec, patch, logger, **_):
    kopf.info(body, reason="Created", message="explicit event")
    patch.status["phase"] = "Ready"
    patch.status["size"] = spec.get("size")
    logger.info("widget created")

@kopf.on.update("test.pot.dev", "v1", "widgets", field="spec.size")
def resized(new, patch, **_):
    patch.status["size"] = new

@kopf.on.delete("test.pot.dev", "v1", "widgets")
def deleted(name, **_):
    import kubernetes
    kubernetes.config.load_kube_config(config_file=os.environ["KUBECONFIG"])
    kubernetes.client.CoreV1Api().create_namespaced_config_map(
        "default", {"metadata": {"name": "deleted-" + name}})
"""


def _wait(pred, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


@contextlib.contextmanager
def _own_registry() -> Iterator[kopf.OperatorRegistry]:
    """A fresh kopf registry for an operator run in this process. The default one holds pot's
    operator handlers once any test imported pot.operator, and their startup (no pot CRDs on
    this cluster) would hold the run up. ``kopf run`` makes the registry it is given the
    default, so the old one is put back after."""
    previous = kopf.get_default_registry()
    try:
        yield kopf.OperatorRegistry()
    finally:
        kopf.set_default_registry(previous)


def test_kopf_operator_create_update_delete(
    api: kubernetes.client.ApiClient,
    apiserver_cluster: Cluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(apiserver_cluster.kubeconfig))
    path = tmp_path / "operator.py"
    path.write_text(textwrap.dedent(OPERATOR))
    co = kubernetes.client.CustomObjectsApi(api)
    core = kubernetes.client.CoreV1Api(api)

    def get() -> dict:  # type: ignore[type-arg]
        return co.get_namespaced_custom_object("test.pot.dev", "v1", "default", "widgets", "kw")

    with (
        _own_registry() as registry,
        kopf.testing.KopfRunner(
            ["run", "-A", "--standalone", "--verbose", str(path)], timeout=60, registry=registry
        ) as runner,
    ):
        co.create_namespaced_custom_object(
            "test.pot.dev",
            "v1",
            "default",
            "widgets",
            {
                "apiVersion": "test.pot.dev/v1",
                "kind": "Widget",
                "metadata": {"name": "kw"},
                "spec": {"size": 2},
            },
        )
        _wait(lambda: get().get("status", {}).get("phase") == "Ready")
        assert "test.pot.dev/kopf" in get()["metadata"]["finalizers"]
        co.patch_namespaced_custom_object(
            "test.pot.dev", "v1", "default", "widgets", "kw", {"spec": {"size": 5}}
        )
        _wait(lambda: get().get("status", {}).get("size") == 5)
        _wait(
            lambda: any(
                "widget created" in (e.message or "")
                for e in core.list_namespaced_event(
                    "default", field_selector="involvedObject.name=kw"
                ).items
            )
        )
        co.delete_namespaced_custom_object("test.pot.dev", "v1", "default", "widgets", "kw")

        def gone() -> bool:
            try:
                get()
            except ApiException as exc:
                return exc.status == 404
            return False

        _wait(gone)
        core.read_namespaced_config_map("deleted-kw", "default")
    assert runner.exception is None, runner.output
    assert runner.exit_code == 0, runner.output
