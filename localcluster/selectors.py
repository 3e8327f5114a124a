"""Label and field selectors, parsed once per request and matched per object.

Label selector grammar as in ``k8s.io/apimachinery/pkg/labels``: ``a=b``,
``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a`` (exists) and
``!a``, joined by commas. Field selectors support ``=``, ``==`` and ``!=`` on
the fields the real server indexes for the kind: ``metadata.name`` and
``metadata.namespace`` everywhere, plus the per-kind ones in
:data:`FIELD_LABELS` (a custom resource's CRD ``selectableFields``); any other
is a 400 "field label not supported", so a selector that works here works on a
real cluster too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pot.localcluster import statuses

if TYPE_CHECKING:
    from pot.localcluster.resources import ResourceType

Matcher = Callable[[dict[str, Any]], bool]

_TOKEN = re.compile(r"\s*(!=|==|=|\(|\)|,|!|[^\s!=(),]+)")


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise statuses.bad_request(f"unable to parse requirement: {text!r}")
        out.append(m.group(1))
        pos = m.end()
    return out


Requirement = Callable[[dict[str, str]], bool]


def _absent(k: str) -> Requirement:
    return lambda labels: k not in labels


def _exists(k: str) -> Requirement:
    return lambda labels: k in labels


def _equal(k: str, v: str) -> Requirement:
    return lambda labels: labels.get(k) == v


def _not_equal(k: str, v: str) -> Requirement:
    return lambda labels: labels.get(k) != v


def _in(k: str, vs: frozenset[str]) -> Requirement:
    return lambda labels: labels.get(k) in vs


def _not_in(k: str, vs: frozenset[str]) -> Requirement:
    return lambda labels: labels.get(k) not in vs


def parse_labels(text: str | None) -> Matcher:
    """A predicate on an object's ``metadata.labels`` (400 BadRequest on bad syntax)."""
    if not text or not text.strip():
        return lambda _obj: True
    toks = _tokens(text)
    reqs: list[Requirement] = []
    i = 0

    def bad() -> statuses.ApiError:
        return statuses.bad_request(f"unable to parse requirement: invalid label selector {text!r}")

    while i < len(toks):
        if toks[i] == "!":
            if i + 1 >= len(toks):
                raise bad()
            key = toks[i + 1]
            reqs.append(_absent(key))
            i += 2
        else:
            key = toks[i]
            i += 1
            op = toks[i] if i < len(toks) else ","
            if op in ("=", "==", "!="):
                if i + 1 >= len(toks) or toks[i + 1] in (",", "(", ")"):
                    val = ""
                    i += 1
                else:
                    val = toks[i + 1]
                    i += 2
                if op == "!=":
                    reqs.append(_not_equal(key, val))
                else:
                    reqs.append(_equal(key, val))
            elif op in ("in", "notin"):
                if i + 1 >= len(toks) or toks[i + 1] != "(":
                    raise bad()
                i += 2
                values: set[str] = set()
                while i < len(toks) and toks[i] != ")":
                    if toks[i] != ",":
                        values.add(toks[i])
                    i += 1
                if i >= len(toks):
                    raise bad()
                i += 1
                if op == "in":
                    reqs.append(_in(key, frozenset(values)))
                else:
                    reqs.append(_not_in(key, frozenset(values)))
            elif op == ",":
                reqs.append(_exists(key))
            else:
                raise bad()
        if i < len(toks):
            if toks[i] != ",":
                raise bad()
            i += 1

    def match(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(r(labels) for r in reqs)

    return match


def field_value(obj: dict[str, Any], path: str) -> str:
    """The string form of a dotted field, "" when absent (as the real field sets do)."""
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


_EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)
FIELD_LABELS: dict[tuple[str, str], tuple[str, ...]] = {
    # (group, resource) -> field labels beyond metadata.name/namespace, from the
    # registries' GetAttrs / AddFieldLabelConversionFunc in kubernetes/pkg.
    ("", "pods"): (
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.podIPs",
        "status.nominatedNodeName",
    ),
    ("", "events"): _EVENT_FIELDS,
    ("", "nodes"): ("spec.unschedulable",),
    ("", "namespaces"): ("status.phase",),
    ("", "secrets"): ("type",),
    ("", "services"): ("spec.clusterIP", "spec.type"),
    ("", "replicationcontrollers"): ("status.replicas",),
    ("apps", "replicasets"): ("status.replicas",),
    ("batch", "jobs"): ("status.successful",),
    ("certificates.k8s.io", "certificatesigningrequests"): ("spec.signerName",),
}
_PERMISSIVE = {("events.k8s.io", "events")}
"""Served with the core Event's fields under other names: not checked here."""


def field_labels(t: ResourceType) -> frozenset[str] | None:
    """The field labels a selector may name for a resource type (None: any)."""
    if (t.group, t.resource) in _PERMISSIVE:
        return None
    own = FIELD_LABELS.get((t.group, t.resource), ())
    return frozenset(("metadata.name", "metadata.namespace", *own, *t.selectable_fields))


def parse_fields(text: str | None, allowed: frozenset[str] | None = None) -> Matcher:
    """A predicate from a field selector such as ``metadata.name=x,status.phase!=Failed``;
    400 for a field outside ``allowed`` (when given)."""
    if not text or not text.strip():
        return lambda _obj: True
    reqs: list[tuple[str, bool, str]] = []
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-/]+)\s*(!=|==|=)\s*(.*)", part)
        if m is None:
            raise statuses.bad_request(f"invalid field selector: {part!r}")
        if allowed is not None and m.group(1) not in allowed:
            raise statuses.bad_request(f"field label not supported: {m.group(1)}")
        reqs.append((m.group(1), m.group(2) != "!=", m.group(3)))

    def match(obj: dict[str, Any]) -> bool:
        return all((field_value(obj, path) == val) == eq for path, eq, val in reqs)

    return match


def single_name(text: str | None) -> str | None:
    """The name a ``metadata.name=X`` field selector pins (kubectl delete --wait uses it)."""
    if not text:
        return None
    for part in text.split(","):
        m = re.fullmatch(r"\s*metadata\.name\s*==?\s*(\S+)\s*", part)
        if m:
            return m.group(1)
    return None
