"""OpenAPI v3 documents: ``/openapi/v3`` and one document per group/version.

Two kubectl features read them:

* ``kubectl explain`` finds the schema whose ``x-kubernetes-group-version-kind``
  names the kind and renders its ``description``s; for custom resources that
  is the CRD's ``openAPIV3Schema`` as written, so every description shows.
* ``--validate=strict`` (kubectl's default) checks that the PATCH operation of
  the kind lists a ``fieldValidation`` query parameter; if it does, kubectl
  leaves validation to the server (``fieldValidation=Strict``), otherwise it
  falls back to client-side validation against ``/openapi/v2``, which this
  server does not serve. So every kind gets such an operation.

Built-in kinds get a minimal schema (standard fields described, the rest
``x-kubernetes-preserve-unknown-fields``): the server stores built-ins as
given and does not validate their fields. PATCH operations do not list
``application/strategic-merge-patch+json``, so kubectl computes strategic
patches for built-ins from its compiled-in Go types, as it does for any
server without the v3 document, and JSON merge patches for custom resources.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from pot.localcluster.resources import Registry, ResourceType

_OBJECT_META = {
    "type": "object",
    "description": "ObjectMeta is metadata that all persisted resources must have, which includes all "
    "objects users must create.",
    "properties": {
        "name": {"type": "string", "description": "Name must be unique within a namespace."},
        "namespace": {
            "type": "string",
            "description": "Namespace defines the space within which each name must be unique.",
        },
        "labels": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Map of string keys and values that can be used to organize and categorize objects.",
        },
        "annotations": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Annotations is an unstructured key value map stored with a resource.",
        },
        "finalizers": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Must be empty before the object is deleted from the registry.",
        },
    },
    "x-kubernetes-preserve-unknown-fields": True,
}
_META_REF = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def _schema_id(t: ResourceType) -> str:
    group = ".".join(reversed(t.group.split("."))) if t.group else "core"
    return (
        f"{group}.{t.version}.{t.kind}"
        if t.is_custom
        else f"io.k8s.api.{t.group.split('.')[0] or 'core'}.{t.version}.{t.kind}"
    )


def _base_props(t: ResourceType) -> dict[str, Any]:
    return {
        "apiVersion": {
            "type": "string",
            "description": "APIVersion defines the versioned schema of this representation of an object.",
        },
        "kind": {
            "type": "string",
            "description": "Kind is a string value representing the REST resource this object represents.",
        },
        "metadata": {
            "allOf": [{"$ref": f"#/components/schemas/{_META_REF}"}],
            "description": "Standard object's metadata.",
        },
    }


def kind_schema(t: ResourceType) -> dict[str, Any]:
    gvk = [{"group": t.group, "version": t.version, "kind": t.kind}]
    if t.schema is not None:
        s = copy.deepcopy(t.schema)
        props = s.setdefault("properties", {})
        for k, v in _base_props(t).items():
            if k == "metadata" or k not in props:
                props[k] = v
    else:
        s = {
            "type": "object",
            "description": f"{t.kind} (stored as given by the pot local cluster; fields are not validated).",
            "properties": {
                **_base_props(t),
                "spec": {
                    "type": "object",
                    "description": f"Spec of the {t.kind}.",
                    "x-kubernetes-preserve-unknown-fields": True,
                },
                "status": {
                    "type": "object",
                    "description": f"Status of the {t.kind}.",
                    "x-kubernetes-preserve-unknown-fields": True,
                },
            },
            "x-kubernetes-preserve-unknown-fields": True,
        }
    s["x-kubernetes-group-version-kind"] = gvk
    return s


_PARAMS = [
    {"name": n, "in": "query", "schema": {"type": "string"}, "uniqueItems": True}
    for n in ("dryRun", "fieldManager", "fieldValidation", "force")
]


def _ops(t: ResourceType) -> dict[str, Any]:
    ref = {"schema": {"$ref": f"#/components/schemas/{_schema_id(t)}"}}
    gvk = {"group": t.group, "version": t.version, "kind": t.kind}
    ok = {"200": {"description": "OK", "content": {"application/json": ref}}}
    body = {"content": {"application/json": ref}}
    patch_body = {
        "content": {
            "application/apply-patch+yaml": {"schema": {"type": "object"}},
            "application/json-patch+json": {"schema": {"type": "object"}},
            "application/merge-patch+json": {"schema": {"type": "object"}},
        }
    }
    common = {"x-kubernetes-group-version-kind": gvk, "responses": ok}
    return {
        "get": {**common, "x-kubernetes-action": "get", "operationId": f"read{t.kind}"},
        "put": {
            **common,
            "x-kubernetes-action": "put",
            "operationId": f"replace{t.kind}",
            "parameters": _PARAMS,
            "requestBody": body,
        },
        "patch": {
            **common,
            "x-kubernetes-action": "patch",
            "operationId": f"patch{t.kind}",
            "parameters": _PARAMS,
            "requestBody": patch_body,
        },
        "delete": {**common, "x-kubernetes-action": "delete", "operationId": f"delete{t.kind}"},
    }


def _prefix(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def document(reg: Registry, group: str, version: str) -> dict[str, Any] | None:
    types = [t for t in reg.all() if t.group == group and t.version == version]
    if not types:
        return None
    schemas: dict[str, Any] = {_META_REF: _OBJECT_META}
    paths: dict[str, Any] = {}
    for t in types:
        schemas[_schema_id(t)] = kind_schema(t)
        base = "/" + _prefix(group, version)
        item = (
            f"{base}/namespaces/{{namespace}}/{t.resource}/{{name}}"
            if t.namespaced
            else f"{base}/{t.resource}/{{name}}"
        )
        paths[item] = _ops(t)
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.37.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def digest(doc: Any) -> str:
    return hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32].upper()


def root(reg: Registry) -> dict[str, Any]:
    paths = {}
    for group, versions in reg.groups().items():
        for v in versions:
            p = _prefix(group, v)
            doc = document(reg, group, v)
            paths[p] = {"serverRelativeURL": f"/openapi/v3/{p}?hash={digest(doc)}"}
    return {"paths": paths}
