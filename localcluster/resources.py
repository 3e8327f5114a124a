"""The resource types the local API server serves: built-ins and CRD-defined.

A :class:`ResourceType` holds what discovery, routing, tables and validation
need to know about one group/version/resource. Built-ins are a fixed table
(the kinds this project and its clients use, issue 3 "Deliver 3"); custom
resources are derived from stored CustomResourceDefinitions, so creating a
CRD makes its resources appear in discovery at once, as on a real server
after the CRD is Established.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(slots=True)
class ResourceType:
    """One served group/version/resource."""

    group: str
    version: str
    resource: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    """Sub-resources served (``status``, ``scale``, ``log``, ``binding``...)."""
    verbs: tuple[str, ...] = ALL_VERBS
    schema: dict[str, Any] | None = None
    """The CRD's openAPIV3Schema (None for built-ins: stored as given)."""
    printer_columns: list[dict[str, Any]] = field(default_factory=list)
    scale_paths: dict[str, str] = field(default_factory=dict)
    """CRD scale sub-resource: specReplicasPath, statusReplicasPath, labelSelectorPath."""
    crd_name: str = ""
    """Name of the defining CRD; empty for built-ins."""
    selectable_fields: tuple[str, ...] = ()
    """CRD ``selectableFields`` as field-selector labels (``spec.color``), beyond metadata's."""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    @property
    def is_custom(self) -> bool:
        return bool(self.crd_name)

    @property
    def storage_key(self) -> tuple[str, str]:
        """Objects are stored per group/resource, whatever version they were written in."""
        return (self.group, self.resource)


def _b(  # noqa: PLR0917 (a row builder for the table below: positional keeps rows short)
    group: str,
    version: str,
    resource: str,
    kind: str,
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    sub: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
    verbs: tuple[str, ...] = ALL_VERBS,
) -> ResourceType:
    return ResourceType(group, version, resource, kind, namespaced, short, categories, sub, verbs)


_ALL = ("all",)

BUILTINS: list[ResourceType] = [
    # core/v1
    _b("", "v1", "namespaces", "Namespace", False, ("ns",), ("status", "finalize")),
    _b(
        "",
        "v1",
        "pods",
        "Pod",
        True,
        ("po",),
        ("status", "log", "binding", "eviction", "exec"),
        _ALL,
    ),
    _b("", "v1", "services", "Service", True, ("svc",), ("status",), _ALL),
    _b("", "v1", "endpoints", "Endpoints", True, ("ep",)),
    _b("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
    _b("", "v1", "secrets", "Secret", True),
    _b("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",), ("token",)),
    _b("", "v1", "events", "Event", True, ("ev",)),
    _b("", "v1", "nodes", "Node", False, ("no",), ("status",)),
    _b("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ("pvc",), ("status",)),
    _b("", "v1", "persistentvolumes", "PersistentVolume", False, ("pv",), ("status",)),
    _b("", "v1", "resourcequotas", "ResourceQuota", True, ("quota",), ("status",)),
    _b("", "v1", "limitranges", "LimitRange", True, ("limits",)),
    # apps/v1
    _b("apps", "v1", "deployments", "Deployment", True, ("deploy",), ("status", "scale"), _ALL),
    _b("apps", "v1", "replicasets", "ReplicaSet", True, ("rs",), ("status", "scale"), _ALL),
    _b("apps", "v1", "statefulsets", "StatefulSet", True, ("sts",), ("status", "scale"), _ALL),
    _b("apps", "v1", "daemonsets", "DaemonSet", True, ("ds",), ("status",), _ALL),
    _b("apps", "v1", "controllerrevisions", "ControllerRevision", True),
    # batch/v1
    _b("batch", "v1", "jobs", "Job", True, (), ("status",), _ALL),
    _b("batch", "v1", "cronjobs", "CronJob", True, ("cj",), ("status",), _ALL),
    # policy/v1
    _b("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, ("pdb",), ("status",)),
    # coordination.k8s.io/v1
    _b("coordination.k8s.io", "v1", "leases", "Lease", True),
    # rbac.authorization.k8s.io/v1: stored, never enforced (docs/localcluster.md).
    _b("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    _b("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    _b("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    _b("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    # events.k8s.io/v1 shares storage with core events on a real server; here it
    # is its own resource (kopf and kubectl use the core one).
    _b("events.k8s.io", "v1", "events", "Event", True, ("ev",)),
    # discovery.k8s.io/v1
    _b("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True),
    # networking.k8s.io/v1 (charts commonly carry one)
    _b("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, ("netpol",)),
    _b("networking.k8s.io", "v1", "ingresses", "Ingress", True, ("ing",), ("status",)),
    # scheduling.k8s.io/v1
    _b("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", False, ("pc",)),
    # apiextensions.k8s.io/v1
    _b(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        ("crd", "crds"),
        ("status",),
    ),
]

# Group preference order for discovery (core first, then as a real server lists them).
GROUP_ORDER = [
    "",
    "apps",
    "events.k8s.io",
    "batch",
    "policy",
    "rbac.authorization.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "networking.k8s.io",
    "scheduling.k8s.io",
    "apiextensions.k8s.io",
]


def types_of_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """The resource types one CustomResourceDefinition serves (one per served version)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    out = []
    for v in spec.get("versions") or []:
        if not v.get("served", True):
            continue
        subs = v.get("subresources") or {}
        sub: tuple[str, ...] = tuple(s for s in ("status", "scale") if s in subs)
        schema = (v.get("schema") or {}).get("openAPIV3Schema")
        out.append(
            ResourceType(
                group=spec.get("group", ""),
                version=v.get("name", ""),
                resource=names.get("plural", ""),
                kind=names.get("kind", ""),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=sub,
                schema=schema,
                printer_columns=list(v.get("additionalPrinterColumns") or []),
                scale_paths=dict(subs.get("scale") or {}),
                crd_name=(crd.get("metadata") or {}).get("name", ""),
                selectable_fields=tuple(
                    str(f.get("jsonPath", "")).lstrip(".")
                    for f in v.get("selectableFields") or []
                    if isinstance(f, dict)
                ),
            )
        )
    return out


class Registry:
    """Every served resource type, looked up by (group, version, resource)."""

    def __init__(self) -> None:
        self._builtin = {(t.group, t.version, t.resource): t for t in BUILTINS}
        self._custom: dict[str, list[ResourceType]] = {}
        self._index: dict[tuple[str, str, str], ResourceType] = {}
        self.generation = 0
        """Bumped whenever the set of types changes (discovery and OpenAPI hashes)."""
        self._rebuild()

    def _rebuild(self) -> None:
        self._index = dict(self._builtin)
        for types in self._custom.values():
            for t in types:
                self._index.setdefault((t.group, t.version, t.resource), t)
        self.generation += 1

    def set_crd(self, crd: dict[str, Any]) -> None:
        """Serve (or re-serve, after an update) a CRD's resources."""
        self._custom[(crd.get("metadata") or {}).get("name", "")] = types_of_crd(crd)
        self._rebuild()

    def drop_crd(self, name: str) -> None:
        self._custom.pop(name, None)
        self._rebuild()

    def get(self, group: str, version: str, resource: str) -> ResourceType | None:
        return self._index.get((group, version, resource))

    def all(self) -> list[ResourceType]:
        return list(self._index.values())

    def by_storage(self, group: str, resource: str) -> ResourceType | None:
        """Any served version of group/resource (for GC and namespace cleanup)."""
        for t in self._index.values():
            if t.group == group and t.resource == resource:
                return t
        return None

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        for t in self._index.values():
            if t.group == group and t.version == version and t.kind == kind:
                return t
        return None

    def groups(self) -> dict[str, list[str]]:
        """group -> served versions, preferred first, in discovery order."""
        out: dict[str, list[str]] = {}
        for t in self._index.values():
            versions = out.setdefault(t.group, [])
            if t.version not in versions:
                versions.append(t.version)
        order = {g: i for i, g in enumerate(GROUP_ORDER)}
        return dict(sorted(out.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
