"""Sub-resources beyond ``status``: ``binding``, ``eviction``, ``log`` and ``scale``.

* ``pods/binding`` (POST a Binding): how a scheduler assigns a pod to a node;
  refused with 409 if the pod is already bound (as the real server does).
* ``pods/eviction`` (POST an Eviction): a graceful delete of the pod, refused
  with 429 when its PodDisruptionBudget allows no disruption (:mod:`disruption`).
* ``pods/log``: proxied to the kubelet of the pod's node, like the real API
  server does. The node advertises where its kubelet serves in
  ``status.daemonEndpoints.kubeletEndpoint.Port`` (and its first InternalIP
  in ``status.addresses``, default 127.0.0.1); the kubelet answers
  ``GET /containerLogs/{namespace}/{pod}/{container}`` with the same query
  (``follow``, ``tailLines``, ``sinceSeconds``, ``timestamps``, ``previous``).
* ``scale`` (``autoscaling/v1`` Scale) for deployments, replicasets,
  statefulsets and CRDs that declare the sub-resource (``kubectl scale``).
"""

from __future__ import annotations

import copy
from typing import Any

import aiohttp
from aiohttp import web

from pot.localcluster import disruption, handling, patching, statuses, tables
from pot.localcluster.resources import ResourceType
from pot.localcluster.storage import Obj


def _success(code: int = 201) -> dict[str, Any]:
    return {**statuses.success(), "code": code}


def post(
    cluster: handling.Cluster, t: ResourceType, ns: str, name: str, *, sub: str, body: Any
) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise statuses.bad_request(f"the body of a {sub} request must be an object")
    pod = cluster.get(t, ns, name)
    if sub == "binding":
        node = (body.get("target") or {}).get("name")
        if not node:
            raise statuses.invalid(
                "Binding",
                "",
                name,
                [statuses.Cause("target.name", "FieldValueRequired", "Required value")],
            )
        current = (pod.get("spec") or {}).get("nodeName")
        if current:
            raise statuses.conflict(
                statuses.Target("pods/binding", "", name),
                f'pod {name} is already assigned to node "{current}"',
            )
        old = cluster.store.get(cluster.key(t, ns, name))
        new = copy.deepcopy(old or {})
        new.setdefault("spec", {})["nodeName"] = node
        cond = {"type": "PodScheduled", "status": "True", "lastTransitionTime": handling.now()}
        status = new.setdefault("status", {})
        status["conditions"] = [
            c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"
        ] + [cond]
        # One write, as the real binding: no watcher sees nodeName set while PodScheduled
        # still says False (Unschedulable) from before.
        cluster.replace(
            t,
            cluster.key(t, ns, name),
            old or {},
            new,
            opts=handling.WriteOptions(manager="scheduler"),
            sub="binding",
        )
        return _success()
    disruption.check_eviction(cluster.store, pod)
    options = body.get("deleteOptions") or {}
    cluster.delete(
        t,
        ns,
        name,
        grace=options.get("gracePeriodSeconds"),
        preconditions=options.get("preconditions"),
    )
    return _success()


async def get(
    request: web.Request,
    cluster: handling.Cluster,
    t: ResourceType,
    ns: str,
    name: str,
    *,
    sub: str,
) -> web.StreamResponse:
    if sub == "scale":
        return web.json_response(scale_of(cluster, t, ns, name))
    if sub != "log":
        raise statuses.method_not_allowed()
    pod = cluster.get(t, ns, name)
    spec = pod.get("spec") or {}
    containers = [c.get("name") for c in spec.get("containers") or []]
    container = request.query.get("container") or (containers[0] if len(containers) == 1 else "")
    if not container:
        raise statuses.bad_request(
            f"a container name must be specified for pod {name}, choose one of: [{' '.join(map(str, containers))}]"
        )
    node_name = spec.get("nodeName")
    if not node_name:
        raise statuses.bad_request(f"pod {name} does not have a host assigned")
    node = cluster.store.get(("", "nodes", "", node_name)) or {}
    nstatus = node.get("status") or {}
    port = ((nstatus.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
    addr = next(
        (a.get("address") for a in nstatus.get("addresses") or [] if a.get("type") == "InternalIP"),
        "127.0.0.1",
    )
    if not port:
        raise statuses.ApiError(
            503, "ServiceUnavailable", f"node {node_name} has no kubelet endpoint"
        )
    query = {k: v for k, v in request.query.items() if k != "container"}
    url = f"http://{addr}:{port}/containerLogs/{ns}/{name}/{container}"
    resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
    try:
        async with (
            aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5)
            ) as session,
            session.get(url, params=query) as upstream,
        ):
            if upstream.status != 200:
                text = await upstream.text()
                raise statuses.ApiError(
                    upstream.status,
                    "BadRequest" if upstream.status < 500 else "InternalError",
                    text.strip(),
                )
            await resp.prepare(request)
            async for chunk in upstream.content.iter_any():
                await resp.write(chunk)
    except aiohttp.ClientError as exc:
        raise statuses.ApiError(
            503, "ServiceUnavailable", f"cannot reach the kubelet of node {node_name}: {exc}"
        ) from exc
    await resp.write_eof()
    return resp


def _paths(t: ResourceType) -> tuple[str, str, str]:
    if t.scale_paths:
        return (
            t.scale_paths.get("specReplicasPath", ".spec.replicas"),
            t.scale_paths.get("statusReplicasPath", ".status.replicas"),
            t.scale_paths.get("labelSelectorPath", ""),
        )
    return ".spec.replicas", ".status.replicas", ".spec.selector"


def scale_of(cluster: handling.Cluster, t: ResourceType, ns: str, name: str) -> dict[str, Any]:
    obj = cluster.get(t, ns, name)
    spec_path, status_path, sel_path = _paths(t)
    meta = obj.get("metadata") or {}
    selector = tables.jsonpath(obj, sel_path) if sel_path else None
    if isinstance(selector, dict):
        selector = ",".join(f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items())
    status: dict[str, Any] = {"replicas": tables.jsonpath(obj, status_path) or 0}
    if selector:
        status["selector"] = selector
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": tables.jsonpath(obj, spec_path) or 0},
        "status": status,
    }


def _set_replicas(
    cluster: handling.Cluster,
    t: ResourceType,
    ns: str,
    name: str,
    *,
    scale: Any,
    opts: handling.WriteOptions,
) -> dict[str, Any]:
    if not isinstance(scale, dict) or not isinstance(
        (scale.get("spec") or {}).get("replicas"), int
    ):
        raise statuses.invalid(
            "Scale",
            "autoscaling",
            name,
            [statuses.Cause("spec.replicas", "FieldValueRequired", "Required value")],
        )
    key = cluster.key(t, ns, name)
    old = cluster.store.get(key)
    if old is None:
        raise statuses.not_found(handling.target(t, name))
    rv = (scale.get("metadata") or {}).get("resourceVersion")
    if rv and rv != old["metadata"].get("resourceVersion"):
        raise statuses.conflict(handling.target(t, name))
    new: Obj = copy.deepcopy(old)
    cur = new
    parts = _paths(t)[0].lstrip(".").split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = scale["spec"]["replicas"]
    cluster.replace(t, key, old, new, opts=opts)
    return scale_of(cluster, t, ns, name)


def put_scale(
    cluster: handling.Cluster,
    t: ResourceType,
    ns: str,
    name: str,
    *,
    body: Any,
    opts: handling.WriteOptions,
) -> dict[str, Any]:
    return _set_replicas(cluster, t, ns, name, scale=body, opts=opts)


def patch_scale(
    cluster: handling.Cluster,
    t: ResourceType,
    ns: str,
    name: str,
    *,
    ctype: str,
    body: Any,
    opts: handling.WriteOptions,
) -> dict[str, Any]:
    current = scale_of(cluster, t, ns, name)
    if ctype == "application/json-patch+json":
        new = patching.json_patch(current, body)
    elif ctype == "application/strategic-merge-patch+json":
        new = patching.strategic_merge(current, body)
    else:
        new = patching.json_merge(current, body)
    return _set_replicas(cluster, t, ns, name, scale=new, opts=opts)
