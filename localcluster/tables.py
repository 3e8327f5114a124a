"""``Table`` responses: what ``kubectl get`` prints.

kubectl asks for ``application/json;as=Table;v=v1;g=meta.k8s.io`` and prints
the server's columns as they come, so the server decides them: a CRD's
``additionalPrinterColumns`` (evaluated with a small JSONPath subset; ``date``
columns humanised as the real server does), or for built-ins the handful of
columns kubectl users expect (pods READY/STATUS/RESTARTS, deployments
READY/UP-TO-DATE/AVAILABLE, ...).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import Any

from pot.localcluster.resources import ResourceType

Column = dict[str, Any]

_NAME: Column = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "description": "Name must be unique within a namespace.",
    "priority": 0,
}
_AGE: Column = {
    "name": "Age",
    "type": "string",
    "format": "",
    "description": "CreationTimestamp is a timestamp representing the server time when this object was created.",
    "priority": 0,
}


def human_age(ts: str | None) -> str:
    """``5s``, ``3m12s``, ``4h``, ``2d`` as kubectl's HumanDuration prints them."""
    if not ts:
        return "<unknown>"
    try:
        t = datetime.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return "<invalid>"
    secs = int((datetime.datetime.now(datetime.UTC) - t).total_seconds())
    if secs < 0:
        return "0s"
    if secs < 120:
        return f"{secs}s"
    mins = secs // 60
    if mins < 10:
        return f"{mins}m{secs % 60}s" if secs % 60 else f"{mins}m"
    if mins < 180:
        return f"{mins}m"
    hours = mins // 60
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


_SEGMENT = re.compile(r"\.([A-Za-z0-9_\-]+)|\[(\d+)\]|\['([^']+)'\]")


def jsonpath(obj: Any, path: str) -> Any:
    """A CRD printer column's JSONPath: ``.a.b``, ``.a[0].b``, ``.a['x.y']`` (None if absent)."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    if path.startswith("$"):
        path = path[1:]
    cur = obj
    pos = 0
    while pos < len(path):
        m = _SEGMENT.match(path, pos)
        if m is None:
            return None
        pos = m.end()
        key = m.group(1) or m.group(3)
        if key is not None:
            if not isinstance(cur, dict) or key not in cur:
                return None
            cur = cur[key]
        else:
            idx = int(m.group(2))
            if not isinstance(cur, list) or idx >= len(cur):
                return None
            cur = cur[idx]
    return cur


def _crd_columns(t: ResourceType) -> list[tuple[Column, Callable[[dict[str, Any]], Any]]]:
    cols: list[tuple[Column, Callable[[dict[str, Any]], Any]]] = [(_NAME, _name)]
    printer = t.printer_columns or [
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
    ]
    for pc in printer:
        ctype = pc.get("type", "string")
        col = {
            "name": pc.get("name", ""),
            "type": ctype if ctype != "date" else "date",
            "format": pc.get("format", ""),
            "description": pc.get("description", ""),
            "priority": int(pc.get("priority", 0)),
        }
        cols.append((col, _crd_cell(pc.get("jsonPath", ""), ctype)))
    return cols


def _crd_cell(path: str, ctype: str) -> Callable[[dict[str, Any]], Any]:
    def cell(obj: dict[str, Any]) -> Any:
        v = jsonpath(obj, path)
        if v is None:
            return None
        if ctype == "date":
            return human_age(v if isinstance(v, str) else None)
        if isinstance(v, dict | list):
            import json

            return json.dumps(v, separators=(",", ":"))
        return v

    return cell


def _name(obj: dict[str, Any]) -> Any:
    return (obj.get("metadata") or {}).get("name", "")


def _age(obj: dict[str, Any]) -> Any:
    return human_age((obj.get("metadata") or {}).get("creationTimestamp"))


def _col(name: str, ctype: str = "string", priority: int = 0, desc: str = "") -> Column:
    return {
        "name": name,
        "type": ctype,
        "format": "",
        "description": desc or name,
        "priority": priority,
    }


def _pod_ready(o: dict[str, Any]) -> str:
    statuses = (o.get("status") or {}).get("containerStatuses") or []
    total = len((o.get("spec") or {}).get("containers") or []) or len(statuses)
    return f"{sum(1 for s in statuses if s.get('ready'))}/{total}"


def _pod_status(o: dict[str, Any]) -> str:
    if (o.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    st = o.get("status") or {}
    for cond in st.get("conditions") or []:  # as kubectl's printPod (issue 4: scheduling gates)
        if cond.get("type") == "PodScheduled" and cond.get("reason") == "SchedulingGated":
            return "SchedulingGated"
    for cs in st.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            return str(waiting["reason"])
    return str(st.get("reason") or st.get("phase") or "Pending")


def _restarts(o: dict[str, Any]) -> int:
    return sum(
        int(cs.get("restartCount", 0))
        for cs in (o.get("status") or {}).get("containerStatuses") or []
    )


def _get(path: str, default: Any = None) -> Callable[[dict[str, Any]], Any]:
    return lambda o: v if (v := jsonpath(o, path)) is not None else default


def _node_status(o: dict[str, Any]) -> str:
    conds = (o.get("status") or {}).get("conditions") or []
    ready = next((c for c in conds if c.get("type") == "Ready"), None)
    s = "Ready" if ready and ready.get("status") == "True" else "NotReady" if ready else "Unknown"
    if (o.get("spec") or {}).get("unschedulable"):
        s += ",SchedulingDisabled"
    return s


def _job_status(o: dict[str, Any]) -> str:
    for c in (o.get("status") or {}).get("conditions") or []:
        if c.get("status") == "True" and c.get("type") in ("Complete", "Failed"):
            return str(c["type"])
    return "Running"


_Cols = list[tuple[Column, Callable[[dict[str, Any]], Any]]]

BUILTIN_COLUMNS: dict[tuple[str, str], _Cols] = {
    ("", "pods"): [
        (_col("Ready"), _pod_ready),
        (_col("Status"), _pod_status),
        (_col("Restarts", "string"), _restarts),
        (_AGE, _age),
        (_col("IP", priority=1), _get(".status.podIP", "<none>")),
        (_col("Node", priority=1), _get(".spec.nodeName", "<none>")),
    ],
    ("", "nodes"): [(_col("Status"), _node_status), (_AGE, _age)],
    ("", "namespaces"): [(_col("Status"), _get(".status.phase", "Active")), (_AGE, _age)],
    ("", "services"): [
        (_col("Type"), _get(".spec.type", "ClusterIP")),
        (_col("Cluster-IP"), _get(".spec.clusterIP", "<none>")),
        (_AGE, _age),
    ],
    ("apps", "deployments"): [
        (
            _col("Ready"),
            lambda o: (
                f"{jsonpath(o, '.status.readyReplicas') or 0}/{jsonpath(o, '.spec.replicas') or 0}"
            ),
        ),
        (_col("Up-to-date", "integer"), _get(".status.updatedReplicas", 0)),
        (_col("Available", "integer"), _get(".status.availableReplicas", 0)),
        (_AGE, _age),
    ],
    ("apps", "statefulsets"): [
        (
            _col("Ready"),
            lambda o: (
                f"{jsonpath(o, '.status.readyReplicas') or 0}/{jsonpath(o, '.spec.replicas') or 0}"
            ),
        ),
        (_AGE, _age),
    ],
    ("batch", "jobs"): [
        (_col("Status"), _job_status),
        (
            _col("Completions"),
            lambda o: (
                f"{jsonpath(o, '.status.succeeded') or 0}/{jsonpath(o, '.spec.completions') or 1}"
            ),
        ),
        (_AGE, _age),
    ],
    ("", "configmaps"): [
        (
            _col("Data", "integer"),
            lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {}),
        ),
        (_AGE, _age),
    ],
    ("", "secrets"): [
        (_col("Type"), _get(".type", "Opaque")),
        (_col("Data", "integer"), lambda o: len(o.get("data") or {})),
        (_AGE, _age),
    ],
    ("", "events"): [
        (_col("Type"), _get(".type", "")),
        (_col("Reason"), _get(".reason", "")),
        (
            _col("Object"),
            lambda o: (
                f"{str(jsonpath(o, '.involvedObject.kind') or '').lower()}/{jsonpath(o, '.involvedObject.name') or ''}"
            ),
        ),
        (_col("Message"), _get(".message", "")),
    ],
}


def columns(t: ResourceType) -> _Cols:
    if t.is_custom:
        return _crd_columns(t)
    return [(_NAME, _name), *BUILTIN_COLUMNS.get((t.group, t.resource), [(_AGE, _age)])]


def partial(obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata", {}),
    }


def _cell(fn: Callable[[dict[str, Any]], Any], obj: dict[str, Any]) -> Any:
    """One cell; built-ins are stored unvalidated, so a field of an unexpected type shows as
    ``<unknown>`` instead of failing the whole table (``kubectl get``, ``get -w``)."""
    try:
        return fn(obj)
    except (AttributeError, TypeError, ValueError, KeyError, IndexError):
        return "<unknown>"


def table(
    t: ResourceType,
    objs: list[dict[str, Any]],
    *,
    include: str = "Metadata",
    list_meta: dict[str, Any] | None = None,
    headers: bool = True,
) -> dict[str, Any]:
    """A ``meta.k8s.io/v1`` Table of ``objs``; ``include`` is the includeObject policy."""
    cols = columns(t)
    rows = []
    for o in objs:
        row: dict[str, Any] = {"cells": [_cell(fn, o) for _, fn in cols]}
        if include == "Object":
            row["object"] = o
        elif include != "None":
            row["object"] = partial(o)
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta or {},
        "columnDefinitions": [c for c, _ in cols] if headers else [],
        "rows": rows,
    }


def wants_table(accept: str) -> bool:
    """Whether the Accept header's first choice is a Table (kubectl get)."""
    first = accept.split(",", maxsplit=1)[0]
    return "as=Table" in first
