"""PATCH bodies: JSON patch, JSON merge patch and strategic merge patch.

* JSON patch (RFC 6902, ``application/json-patch+json``): ``kubectl patch
  --type=json``, the python client when the body is a list.
* JSON merge patch (RFC 7386, ``application/merge-patch+json``): kopf's
  status and finalizer writes, ``kubectl apply`` of custom resources.
* Strategic merge patch (``application/strategic-merge-patch+json``): what
  ``kubectl apply``/``kubectl patch`` send for built-ins. Lists merge by the
  keys the Go types declare (``patchMergeKey``); the table below holds the
  ones this project's manifests use. Directives ``$patch``, ``$retainKeys``,
  ``$setElementOrder/<field>`` and ``$deleteFromPrimitiveList/<field>`` are
  honoured as ``k8s.io/apimachinery/pkg/util/strategicpatch`` does. Custom
  resources refuse it with 415, like a real server.

Server-side apply lives in :mod:`applying`, which reuses the merge-key table.
"""

from __future__ import annotations

import copy
from typing import Any

from pot.localcluster import statuses

# field name -> merge key, from the Go API types' `patchMergeKey` tags. A list
# field not listed here is atomic (replaced as a whole), as in the Go types.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "ownerReferences": "uid",
    "conditions": "type",
    "hostAliases": "ip",
    "addresses": "type",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "taints": "key",
}
PRIMITIVE_MERGE = {"finalizers"}
"""Lists of scalars whose strategy is ``merge`` (a set union)."""


def merge_key(field: str, items: list[Any]) -> str | None:
    """The key list ``field`` merges by, or None when it is atomic."""
    if field == "ports":
        # Container ports merge by containerPort, Service ports by port.
        sample = next((i for i in items if isinstance(i, dict)), {})
        return "containerPort" if "containerPort" in sample else "port"
    return MERGE_KEYS.get(field)


def json_merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = json_merge(out.get(k), v)
    return out


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise statuses.ApiError(422, "Invalid", f"json patch: invalid path {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str], path: str) -> Any:
    cur = doc
    for p in parts:
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and p.isdigit() and int(p) < len(cur):
            cur = cur[int(p)]
        else:
            raise statuses.ApiError(422, "Invalid", f"json patch: path {path!r} does not exist")
    return cur


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    if not isinstance(ops, list):
        raise statuses.bad_request("json patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise statuses.bad_request(f"invalid json patch operation: {op!r}")
        kind, path = op["op"], op["path"]
        parts = _pointer(path)
        if kind == "test":
            if _walk(doc, parts, path) != op.get("value"):
                raise statuses.ApiError(422, "Invalid", f"json patch: test failed at {path!r}")
            continue
        value: Any
        if kind in ("move", "copy"):
            src = _pointer(op.get("from", ""))
            value = copy.deepcopy(_walk(doc, src, op.get("from", "")))
            if kind == "move":
                doc = _remove(doc, src, op.get("from", ""))
            doc = _add(doc, parts, value, path)
        elif kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")), path)
        elif kind == "remove":
            doc = _remove(doc, parts, path)
        elif kind == "replace":
            _walk(doc, parts, path)
            doc = _remove(doc, parts, path)
            doc = _add(doc, parts, copy.deepcopy(op.get("value")), path)
        else:
            raise statuses.bad_request(f"json patch: unknown operation {kind!r}")
    return doc


def _add(doc: Any, parts: list[str], value: Any, path: str) -> Any:
    if not parts:
        return value
    parent = _walk(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise statuses.ApiError(422, "Invalid", f"json patch: bad index in {path!r}")
    else:
        raise statuses.ApiError(422, "Invalid", f"json patch: path {path!r} does not exist")
    return doc


def _remove(doc: Any, parts: list[str], path: str) -> Any:
    if not parts:
        return None
    parent = _walk(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        del parent[int(last)]
    else:
        raise statuses.ApiError(422, "Invalid", f"json patch: path {path!r} does not exist")
    return doc


def strategic_merge(target: Any, patch: Any) -> Any:
    """Strategic merge patch of ``patch`` onto ``target`` (a new object; inputs untouched)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    out: dict[str, Any] = dict(target) if isinstance(target, dict) else {}
    orders: dict[str, list[Any]] = {}
    for k, v in patch.items():
        if k == "$patch":
            continue
        if k == "$retainKeys":
            continue
        if k.startswith("$setElementOrder/"):
            orders[k.split("/", 1)[1]] = v
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            drop = set(v or [])
            out[field] = [x for x in out.get(field) or [] if x not in drop]
            continue
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            merged = strategic_merge(out.get(k), v)
            if merged is None:
                out.pop(k, None)
            else:
                out[k] = merged
        elif isinstance(v, list):
            out[k] = _merge_list(k, out.get(k), v)
        else:
            out[k] = copy.deepcopy(v)
    if "$retainKeys" in patch:
        keep = set(patch["$retainKeys"] or [])
        out = {k: v for k, v in out.items() if k in keep}
    for field, order in orders.items():
        if isinstance(out.get(field), list):
            out[field] = _reorder(field, out[field], order)
    return out


def _merge_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    cur = current if isinstance(current, list) else []
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    if field in PRIMITIVE_MERGE:
        out = list(cur)
        out.extend(x for x in patch if x not in out)
        return out
    key = merge_key(field, cur + patch)
    if key is None or not all(isinstance(i, dict) for i in patch):
        return copy.deepcopy(patch)
    out = [copy.deepcopy(i) for i in cur]
    for item in patch:
        kv = item.get(key)
        idx = next((n for n, c in enumerate(out) if isinstance(c, dict) and c.get(key) == kv), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                del out[idx]
            continue
        if idx is None:
            out.append(strategic_merge({}, item))
        else:
            out[idx] = strategic_merge(out[idx], item)
    return out


def _reorder(field: str, items: list[Any], order: list[Any]) -> list[Any]:
    key = merge_key(field, items)

    def ident(i: Any) -> Any:
        return i.get(key) if key and isinstance(i, dict) else i

    wanted = [ident(o) for o in order]
    rank = {json_key(w): n for n, w in enumerate(wanted)}
    return sorted(items, key=lambda i: rank.get(json_key(ident(i)), len(rank)))


def json_key(v: Any) -> str:
    return repr(v)
