"""Label and field selectors, parsed once per request and matched per object.

Label selector grammar as in ``k8s.io/apimachinery/pkg/labels``: ``a=b``,
``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a`` (exists) and
``!a``, joined by commas. Field selectors support ``=``, ``==`` and ``!=`` on
any dotted path (``metadata.name``, ``spec.nodeName``, ``status.phase``,
``involvedObject.uid``...): a real server allows only a per-kind list, this one
is deliberately permissive since no client relies on the refusal.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pot.localcluster import statuses

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


def parse_fields(text: str | None) -> Matcher:
    """A predicate from a field selector such as ``metadata.name=x,status.phase!=Failed``."""
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
