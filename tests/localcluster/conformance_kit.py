"""Shared kit of the API server's conformance tables (test_apiserver_conformance
and test_apiserver_semantics): raw-HTTP helpers, a CRD with every feature the
rows exercise, and the row registry. One row = one behaviour of issue 3."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from tests.localcluster.conftest import Cluster

NS = "/api/v1/namespaces/default"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
MERGE = "application/merge-patch+json"


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


Row = Callable[[Cluster], None]


def registry() -> tuple[dict[str, Row], Callable[[Row], Row]]:
    """A module's own table of rows and the decorator that adds to it."""
    rows: dict[str, Row] = {}

    def row(fn: Row) -> Row:
        rows[fn.__name__] = fn
        return fn

    return rows, row


def install_crds(cluster: Cluster) -> Cluster:
    """The shared cluster with the Gizmo CRD the rows use."""
    ok(cluster, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", WIDGET_CRD)
    return cluster
