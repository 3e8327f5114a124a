"""Node usage from every namespace when the operator watches only some.

Why: with ``POT_WATCH_NAMESPACES`` (the chart's ``watchNamespaces``) kopf lists
and watches pods in those namespaces only. The gang count (``gang.fit``) then
missed the GPUs that pods in other namespaces hold on the same nodes, released
gangs onto them, and the gangs could not schedule: they timed out, were gated
again and released again, in a loop. This module is a second, read-only pod
list+watch, cluster-wide, used for node usage and nothing else: its pods feed
``Runtime.observe_foreign_pod``, which keeps only their node and summed
requests and only outside the watched namespaces. Every handler still acts
in the watched namespaces only. In cluster-wide mode kopf's own pod watch
already sees every pod, so this watch does not run.

Cheap on the API server and in memory:

- the field selector ``spec.nodeName!=,status.phase!=Succeeded,
  status.phase!=Failed`` sends only the pods that hold a node's resources
  (bound, not finished); a pod that finishes or goes leaves the selection,
  which a watch reports as DELETED; pending pods elsewhere are never sent;
- the list is paged; the watch resumes from the last resourceVersion, with
  bookmarks keeping it fresh, and relists only on 410 Gone;
- the API cannot send only some fields of a pod (a metadata-only listing
  drops the requests), so each pod is reduced on arrival to ``(node,
  requests)``.

RBAC: ``list`` and ``watch`` on pods, cluster-wide (``rbac.NODE_USAGE_RULES``,
the chart's ``-node-usage`` ClusterRole), in both modes; nothing it grants
writes.
"""

from __future__ import annotations

import asyncio
import logging

from pot import errors
from pot.operator import kubeapi, runtime

log = logging.getLogger("pot.operator.usage")

PODS = "/api/v1/pods"
SELECTOR = "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed"
"""Bound pods that have not finished: those whose requests hold a node's room."""
PAGE = 500
WATCH_SECONDS = 300


async def list_into(kube: kubeapi.Client, rt: runtime.Runtime) -> str:
    """List every pod holding node room into ``rt`` (pages of ``PAGE``); return the
    resourceVersion of that listing, to watch from."""
    params = {"fieldSelector": SELECTOR, "limit": str(PAGE)}
    pods: list[runtime.Body] = []
    while True:
        doc = await kube.request("GET", PODS, params=params, kind="pods")
        pods += doc.get("items") or []
        meta = doc.get("metadata") or {}
        if not meta.get("continue"):
            rt.resync_foreign_pods(pods)
            return str(meta.get("resourceVersion") or "")
        params = {**params, "continue": str(meta["continue"])}


async def run(
    kube: kubeapi.Client, rt: runtime.Runtime, resource_version: str, *, retry: float = 1.0
) -> None:
    """Watch from ``resource_version`` forever (cancel to stop): resume where the
    last stream ended, relist on 410 Gone, back off on errors."""
    rv = resource_version
    failures = 0
    while True:
        try:
            if not rv:
                rv = await list_into(kube, rt)
            params = {
                "fieldSelector": SELECTOR,
                "resourceVersion": rv,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": str(WATCH_SECONDS),
            }
            async for kind, obj in kube.watch(PODS, params, kind="pods"):
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    rt.observe_foreign_pod(obj, kind == "DELETED")
                failures = 0
        except asyncio.CancelledError:
            raise
        except kubeapi.ApiError as exc:
            if exc.code == 410:  # history compacted past rv: list again
                rv = ""
                continue
            failures += 1
            log.warning("cluster-wide pod watch (node usage): %s", exc)
            rv = ""
        except errors.ClusterError as exc:
            failures += 1
            log.warning("cluster-wide pod watch (node usage): %s", exc)
        if failures:
            await asyncio.sleep(min(retry * 2 ** min(failures - 1, 5), 30.0))
