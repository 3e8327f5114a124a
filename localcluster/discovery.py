"""Discovery documents: ``/version``, ``/api``, ``/apis`` and per group/version lists.

kubectl, helm and kopf find every resource (its plural, kind, scope, verbs,
short names and categories) here before any request. kubectl 1.37 first asks
for *aggregated* discovery (``Accept: application/json;g=apidiscovery.k8s.io;
v=v2;as=APIGroupDiscoveryList,...,application/json``); answering with plain
``application/json`` makes client-go fall back to legacy discovery, which is
all this server serves: it is simpler and every client supports it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pot.localcluster.resources import Registry, ResourceType

VERSION = {
    "major": "1",
    "minor": "37",
    "gitVersion": "v1.37.0-pot.local",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.25",
    "compiler": "gc",
    "platform": "linux/amd64",
}

# Sub-resource -> (kind, verbs, group, version) as a real server lists them.
_SUB: dict[str, tuple[str, list[str], str, str]] = {
    "status": ("", ["get", "patch", "update"], "", ""),
    "scale": ("Scale", ["get", "patch", "update"], "autoscaling", "v1"),
    "log": ("Pod", ["get"], "", ""),
    "binding": ("Binding", ["create"], "", ""),
    "eviction": ("Eviction", ["create"], "policy", "v1"),
    "finalize": ("", ["update"], "", ""),
    "exec": ("PodExecOptions", ["create", "get"], "", ""),
    "token": ("TokenRequest", ["create"], "authentication.k8s.io", "v1"),
    "attach": ("PodAttachOptions", ["create", "get"], "", ""),
    "portforward": ("PodPortForwardOptions", ["create", "get"], "", ""),
    "proxy": ("PodProxyOptions", ["create", "delete", "get", "patch", "update"], "", ""),
}


def api_versions(host: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
    }


def _group(name: str, versions: list[str]) -> dict[str, Any]:
    vs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": vs, "preferredVersion": vs[0]}


def api_group_list(reg: Registry) -> dict[str, Any]:
    groups = [_group(g, vs) for g, vs in reg.groups().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(reg: Registry, group: str) -> dict[str, Any] | None:
    versions = reg.groups().get(group)
    if not versions or not group:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(group, versions)}


def _entry(t: ResourceType) -> dict[str, Any]:
    e: dict[str, Any] = {
        "name": t.resource,
        "singularName": t.singular,
        "namespaced": t.namespaced,
        "kind": t.kind,
        "verbs": list(t.verbs),
        "storageVersionHash": hashlib.sha256(f"{t.group}/{t.resource}".encode()).hexdigest()[:12],
    }
    if t.short_names:
        e["shortNames"] = list(t.short_names)
    if t.categories:
        e["categories"] = list(t.categories)
    return e


def resource_list(reg: Registry, group: str, version: str) -> dict[str, Any] | None:
    types = [t for t in reg.all() if t.group == group and t.version == version]
    if not types:
        return None
    resources = []
    for t in sorted(types, key=lambda t: t.resource):
        resources.append(_entry(t))
        for sub in t.subresources:
            kind, verbs, g, v = _SUB.get(sub, ("", ["get"], "", ""))
            s: dict[str, Any] = {
                "name": f"{t.resource}/{sub}",
                "singularName": "",
                "namespaced": t.namespaced,
                "kind": kind or t.kind,
                "verbs": verbs,
            }
            if g:
                s["group"], s["version"] = g, v
            resources.append(s)
    gv = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }
