"""List pagination (``limit``/``continue``) and the integer query parameters of lists.

Every page reports the first page's resourceVersion (one snapshot on a real
server), so a watch from the last page's replays changes to pages already
read. A continue token names the last object sent (namespace, name) and that
revision; one older than the store's history is 410, as after a compaction.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from pot.localcluster import statuses
from pot.localcluster.storage import Obj, Store


def count(query: Mapping[str, str], param: str) -> int:
    """A non-negative integer query parameter (0 when absent); 400 otherwise."""
    raw = query.get(param) or "0"
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise statuses.bad_request(
            f"{param}: invalid value {raw!r}: must be a non-negative integer"
        )
    return value


def sort_key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace", ""), meta.get("name", ""))


def page(
    items: list[Obj], query: Mapping[str, str], store: Store
) -> tuple[list[Obj], dict[str, Any]]:
    """The page of ``items`` (sorted by namespace, name) a list request asks for, and its
    list metadata."""
    rv = store.rv
    token = query.get("continue")
    if token:
        try:
            decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
            after, rv = decoded["after"], int(decoded.get("rv", rv))
            if not (isinstance(after, list) and all(isinstance(a, str) for a in after)):
                raise TypeError(after)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise statuses.bad_request("invalid continue token") from None
        if rv < store.oldest:
            raise statuses.gone(
                "The provided continue parameter is too old to display a consistent list "
                "result. You can start a new list without the continue parameter."
            )
        items = [o for o in items if sort_key(o) > tuple(after)]
    meta: dict[str, Any] = {"resourceVersion": str(rv)}
    limit = count(query, "limit")
    if limit and len(items) > limit:
        rest = len(items) - limit
        items = items[:limit]
        meta["continue"] = base64.urlsafe_b64encode(
            json.dumps({"after": list(sort_key(items[-1])), "rv": rv}).encode()
        ).decode()
        meta["remainingItemCount"] = rest
    return items, meta
