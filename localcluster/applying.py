"""Server-side apply and ``metadata.managedFields``.

``kubectl apply --server-side`` and helm v4 send the whole intended object
as ``application/apply-patch+yaml``; the server merges it into the live
object, remembers which fields each *field manager* set, removes fields a
manager set before but no longer applies, and refuses (409, reason Conflict,
causes of type FieldManagerConflict) to change a field another manager owns
unless ``force=true`` (Kubernetes docs, "Server-Side Apply").

Field paths use the ``fieldsV1`` spelling (``f:spec``, ``k:{"name":"c"}``,
``v:"x"``), so what is stored in managedFields reads like a real server's.
Simplifications, documented in docs/localcluster.md: lists merge by the one
key in :data:`patching.MERGE_KEYS` (the real server may use two, e.g.
containerPort+protocol), and ownership is tracked for leaves, associative
list items and set members, not for every intermediate map.
"""

from __future__ import annotations

import copy
import datetime
import json
from collections.abc import Iterator
from typing import Any

from pot.localcluster import patching, statuses

Path = tuple[str, ...]

_SKIP_META = {
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
    "name",
    "namespace",
}


def _k(item: dict[str, Any], key: str) -> str:
    return "k:" + json.dumps({key: item.get(key)}, separators=(",", ":"), sort_keys=True)


def paths_of(
    obj: Any, prefix: Path = (), *, top: bool = True, with_status: bool = True
) -> Iterator[Path]:
    """Every owned path of ``obj``: leaves, list items by key, set members."""
    if not isinstance(obj, dict):
        return
    for k, v in obj.items():
        if top and k in ("apiVersion", "kind"):
            continue
        if top and k == "status" and not with_status:
            continue
        p = (*prefix, "f:" + k)
        if top and k == "metadata" and isinstance(v, dict):
            meta = {mk: mv for mk, mv in v.items() if mk not in _SKIP_META}
            if meta:
                yield from paths_of(meta, p, top=False)
            continue
        if isinstance(v, dict) and v:
            yield from paths_of(v, p, top=False)
        elif isinstance(v, list) and k in patching.PRIMITIVE_MERGE:
            for x in v:
                yield (*p, "v:" + json.dumps(x, separators=(",", ":")))
        elif (
            isinstance(v, list)
            and v
            and all(isinstance(i, dict) for i in v)
            and patching.merge_key(k, v)
        ):
            key = patching.merge_key(k, v) or ""
            for item in v:
                ip = (*p, _k(item, key))
                yield ip
                yield from paths_of({ik: iv for ik, iv in item.items() if ik != key}, ip, top=False)
        else:
            yield p


def to_fields_v1(paths: set[Path]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for p in sorted(paths):
        node = root
        for part in p:
            node = node.setdefault(part, {})
    for p in paths:
        node = root
        for part in p:
            node = node[part]
        if node:
            node["."] = {}
    return root


def from_fields_v1(doc: dict[str, Any], prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    for k, v in doc.items():
        if k == ".":
            out.add(prefix)
            continue
        p = (*prefix, k)
        if isinstance(v, dict) and v:
            out |= from_fields_v1(v, p)
        else:
            out.add(p)
    return out


def _step(cur: Any, part: str) -> tuple[bool, Any]:
    kind, _, rest = part.partition(":")
    if kind == "f" and isinstance(cur, dict) and rest in cur:
        return True, cur[rest]
    if kind == "k" and isinstance(cur, list):
        want = json.loads(rest)
        for item in cur:
            if isinstance(item, dict) and all(item.get(a) == b for a, b in want.items()):
                return True, item
    if kind == "v" and isinstance(cur, list):
        val = json.loads(rest)
        if val in cur:
            return True, val
    return False, None


def value_at(obj: Any, path: Path) -> tuple[bool, Any]:
    cur = obj
    for part in path:
        ok, cur = _step(cur, part)
        if not ok:
            return False, None
    return True, cur


def remove_at(obj: Any, path: Path) -> None:
    ok, parent = value_at(obj, path[:-1])
    if not ok:
        return
    kind, _, rest = path[-1].partition(":")
    if kind == "f" and isinstance(parent, dict):
        parent.pop(rest, None)
    elif kind in ("k", "v") and isinstance(parent, list):
        ok, item = _step(parent, path[-1])
        if ok:
            parent.remove(item)


def merge(live: Any, cfg: Any, field: str = "") -> Any:
    """Merge an applied configuration into the live object (maps deep, lists by key)."""
    if isinstance(cfg, dict) and isinstance(live, dict):
        out = dict(live)
        for k, v in cfg.items():
            out[k] = merge(live.get(k), v, k)
        return out
    if isinstance(cfg, list) and isinstance(live, list):
        if field in patching.PRIMITIVE_MERGE:
            return list(live) + [x for x in cfg if x not in live]
        key = patching.merge_key(field, cfg + live)
        if key and all(isinstance(i, dict) for i in cfg + live):
            out_list = []
            rest = list(live)
            for item in cfg:
                match = next((x for x in rest if x.get(key) == item.get(key)), None)
                if match is not None:
                    rest.remove(match)
                    out_list.append(merge(match, item))
                else:
                    out_list.append(copy.deepcopy(item))
            return out_list + rest
    return copy.deepcopy(cfg)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _owned(managed: list[dict[str, Any]]) -> list[tuple[dict[str, Any], set[Path]]]:
    return [(m, from_fields_v1(m.get("fieldsV1") or {})) for m in managed]


def _entry(manager: str, op: str, api_version: str, paths: set[Path], sub: str) -> dict[str, Any]:
    e: dict[str, Any] = {
        "manager": manager,
        "operation": op,
        "apiVersion": api_version,
        "time": _now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(paths),
    }
    if sub:
        e["subresource"] = sub
    return e


def apply(
    live: dict[str, Any],
    config: dict[str, Any],
    *,
    manager: str,
    force: bool,
    api_version: str,
    subresource: str = "",
) -> dict[str, Any]:
    """The object after ``manager`` applies ``config`` to ``live`` (409 on conflicts)."""
    managed = _owned((live.get("metadata") or {}).get("managedFields") or [])
    new = set(paths_of(config, with_status=subresource == "status"))
    mine: set[Path] = set()
    others: list[tuple[dict[str, Any], set[Path]]] = []
    for m, paths in managed:
        if (
            m.get("manager") == manager
            and m.get("operation") == "Apply"
            and m.get("subresource", "") == subresource
        ):
            mine = paths
        else:
            others.append((m, paths))
    conflicts: list[statuses.Cause] = []
    for m, paths in others:
        for p in sorted(new & paths):
            has_live, lv = value_at(live, p)
            _, cv = value_at(config, p)
            if has_live and lv != cv and not isinstance(cv, dict):
                field = "." + ".".join(part.partition(":")[2] for part in p)
                conflicts.append(
                    statuses.Cause(
                        field, "FieldManagerConflict", f'conflict with "{m.get("manager")}"'
                    )
                )
                if force:
                    paths.discard(p)
    if conflicts and not force:
        lines = "\n".join(f"- {c.message}: {c.field}" for c in conflicts)
        err = statuses.ApiError(
            409,
            "Conflict",
            f"Apply failed with {len(conflicts)} conflict{'s' if len(conflicts) > 1 else ''}:\n{lines}",
            causes=conflicts,
        )
        raise err
    merged = merge(live, config)
    owned_by_others = set().union(*(p for _, p in others)) if others else set()
    for p in sorted(mine - new, key=len, reverse=True):
        if any(o[: len(p)] == p for o in owned_by_others):
            continue
        remove_at(merged, p)
    entries = [m | {"fieldsV1": to_fields_v1(p)} for m, p in others if p]
    entries.append(_entry(manager, "Apply", api_version, new, subresource))
    merged.setdefault("metadata", {})["managedFields"] = entries
    return merged


def record_update(
    old: dict[str, Any] | None,
    new: dict[str, Any],
    *,
    manager: str,
    api_version: str,
    subresource: str = "",
) -> None:
    """After a create/update/patch: ``manager`` now owns every field it changed."""
    meta = new.setdefault("metadata", {})
    if not manager:
        return  # server-side apply has recorded its own entry already
    with_status = subresource == "status"
    before = set(paths_of(old, with_status=with_status)) if old else set()
    after = set(paths_of(new, with_status=with_status))
    changed = {p for p in after if value_at(old, p) != value_at(new, p)} if old else after
    managed = _owned((old or {}).get("metadata", {}).get("managedFields") or [])
    entries = []
    mine: set[Path] = set()
    for m, paths in managed:
        if (
            m.get("manager") == manager
            and m.get("operation") == "Update"
            and m.get("subresource", "") == subresource
        ):
            mine = paths
            continue
        kept = {p for p in paths if p not in changed and (p in after or p not in before)}
        if kept:
            entries.append(m | {"fieldsV1": to_fields_v1(kept)})
    mine = {p for p in mine if p in after} | changed
    if mine:
        entries.append(_entry(manager, "Update", api_version, mine, subresource))
    meta["managedFields"] = entries
