"""The local cluster's Kubernetes API server: HTTP in front of :mod:`handling`.

One aiohttp application serves the whole API surface real clients use
(DESIGN §6): discovery (:mod:`discovery`), OpenAPI v3 (:mod:`openapi`),
resource CRUD, patch and watch for built-ins and custom resources, and the
``status``/``scale``/``binding``/``eviction``/``log``/``finalize``
sub-resources (:mod:`subresources`). Plain HTTP on 127.0.0.1: kubectl, helm,
kopf and the python client all accept an ``http://`` server in a kubeconfig.
``serviceaccounts/token`` mints ServiceAccount tokens for pods. With
``--authorization-mode RBAC`` (and ``--tls-cert``/``--tls-key``, which ``pot
local up`` passes) every request needs a token and passes the stored RBAC
rules (:mod:`authorizing`); otherwise a request without one is the admin.

Why not kmock's ``KubernetesEmulator``: it keeps objects as dicts merged by
dict-update, with no global resourceVersion, no 409 on stale writes, no watch
resumption or 410, no strategic merge or server-side apply, no discovery or
OpenAPI that kubectl/helm accept, and no durability; each of those is what
real clients exercise here, so the server is written for them instead.

Run it alone with ``python -m pot.localcluster.apiserver --dir DIR --port N``;
``pot local up`` (:mod:`launching`) does that in the background.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from pot import errors, files
from pot.localcluster import (
    authorizing,
    collecting,
    discovery,
    escalation,
    handling,
    listing,
    openapi,
    podproxy,
    protobuf,
    selectors,
    statuses,
    subresources,
    tables,
    watching,
)
from pot.localcluster.resources import Registry, ResourceType
from pot.localcluster.storage import Obj, Store

log = logging.getLogger(__name__)

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

MODES = ("AlwaysAllow", "RBAC")

MAX_BODY = 3 * 1024 * 1024
"""Requests larger than this get 413, as etcd's 1.5 MiB value limit plus headroom would."""


def _json(body: Any, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    headers = {"Content-Type": "application/json", "Cache-Control": "no-cache, private"}
    resp = web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(), status=status, headers=headers
    )
    for w in warnings or []:
        resp.headers.add("Warning", f'299 - "{w}"')
    return resp


def _not_found() -> statuses.ApiError:
    return statuses.ApiError(404, "NotFound", "the server could not find the requested resource")


def _bool(v: str | None) -> bool:
    return (v or "").lower() in ("true", "1")


class ApiServer:
    """The application, its store and its garbage collector."""

    def __init__(
        self,
        directory: Path | None,
        *,
        bookmark_interval: float = 10.0,
        authorization: str = "AlwaysAllow",
    ) -> None:
        if authorization not in MODES:
            raise errors.ConfigError(
                f"--authorization-mode: {authorization!r} is not one of {', '.join(MODES)}"
            )
        self.store = Store(directory)
        # Minted tokens stay valid across restarts: the key lives in the state directory.
        self.gate = authorizing.Gate(
            authorizing.Tokens(
                os.urandom(32) if directory is None else files.secret_key(directory / "auth.key")
            ),
            self.store,
            rbac=authorization == "RBAC",
        )
        self.registry = Registry()
        self.cluster = handling.Cluster(self.store, self.registry)
        self.cluster.admit_hooks.append(escalation.Guard(self.gate))
        self.collector: collecting.Collector | None = None
        self.bookmark_interval = bookmark_interval
        self.host = "127.0.0.1:0"
        self.app = web.Application(client_max_size=MAX_BODY, middlewares=[self._errors])
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self.app.on_startup.append(self._on_startup)
        self.app.on_shutdown.append(self._on_shutdown)
        self._runner: web.AppRunner | None = None
        self._openapi_cache: tuple[int, dict[str, Any]] | None = None

    async def _on_startup(self, _: web.Application) -> None:
        self.collector = collecting.Collector(self.cluster)
        self.collector.start()
        self.collector.safe_sweep()
        await self.store.sync()

    async def _on_shutdown(self, _: web.Application) -> None:
        if self.collector is not None:
            await self.collector.stop()
        self.store.close()

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None
    ) -> int:
        """Serve on ``host:port`` (0 picks a free port; HTTPS with ``ssl_context``); returns
        the port."""
        self._runner = web.AppRunner(
            self.app, handle_signals=False, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True, ssl_context=ssl_context)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        bound = sockets[0].getsockname()[1] if sockets else port
        self.host = f"{host}:{bound}"
        return int(bound)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- error handling ---------------------------------------------------------

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        resp = await self._answer_or_status(request, handler)
        if request.method not in ("GET", "HEAD"):
            # Acknowledge a write only once it is on disk (group commit, see storage).
            try:
                await self.store.sync()
            except errors.ClusterError as exc:
                return _json(statuses.ApiError(500, "InternalError", str(exc)).status(), 500)
        return resp

    async def _answer_or_status(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            resp: web.StreamResponse = await handler(request)
            return resp
        except statuses.ApiError as exc:
            return _json(exc.status(), exc.code)
        except web.HTTPRequestEntityTooLarge:
            err = statuses.ApiError(
                413, "RequestEntityTooLarge", f"the request body is larger than {MAX_BODY} bytes"
            )
            return _json(err.status(), 413)
        except errors.ClusterError as exc:
            log.exception("request failed")
            return _json(statuses.ApiError(500, "InternalError", str(exc)).status(), 500)
        except Exception as exc:  # the server must answer every request, never crash
            log.exception("internal error on %s %s", request.method, request.path)
            err = statuses.ApiError(
                500, "InternalError", f"Internal error occurred: {type(exc).__name__}: {exc}"
            )
            return _json(err.status(), 500)

    # -- routing -----------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        user = self.gate.authenticate(
            request.headers.get("Authorization"), parts[0] if parts else "", request.method
        )
        user = self.gate.impersonate(
            user,
            request.headers.get("Impersonate-User"),
            request.headers.getall("Impersonate-Group", []),
        )
        escalation.CURRENT_USER.set(user)
        if parts[:4] == ["apis", "authorization.k8s.io", "v1", "selfsubjectaccessreviews"]:
            if request.method != "POST" or len(parts) != 4:
                raise statuses.method_not_allowed()
            return _json(self.gate.access_review(user, await self._body(request)), 201)
        if request.method not in ("GET", "HEAD") and (not parts or parts[0] not in ("api", "apis")):
            raise statuses.method_not_allowed()
        if not parts:
            return _json(
                {"paths": ["/api", "/api/v1", "/apis", "/openapi/v3", "/version", "/healthz"]}
            )
        head = parts[0]
        if head == "version":
            return _json(discovery.VERSION)
        if head in ("healthz", "livez", "readyz"):
            return web.Response(text="ok")
        if head == "openapi":
            return self._openapi(parts)
        if head == "api":
            if len(parts) == 1:
                return _json(discovery.api_versions(self.host))
            if parts[1] != "v1":
                raise _not_found()
            if len(parts) == 2:
                return self._resource_list("", "v1")
            return await self._resource(request, user, "", "v1", parts[2:])
        if head == "apis":
            if len(parts) == 1:
                return _json(discovery.api_group_list(self.registry))
            if len(parts) == 2:
                group_doc = discovery.api_group(self.registry, parts[1])
                if group_doc is None:
                    raise _not_found()
                return _json(group_doc)
            if len(parts) == 3:
                return self._resource_list(parts[1], parts[2])
            return await self._resource(request, user, parts[1], parts[2], parts[3:])
        raise _not_found()

    def _resource_list(self, group: str, version: str) -> web.Response:
        doc = discovery.resource_list(self.registry, group, version)
        if doc is None:
            raise _not_found()
        return _json(doc)

    def _openapi(self, parts: list[str]) -> web.Response:
        if parts[1:2] != ["v3"]:
            raise _not_found()
        if self._openapi_cache is None or self._openapi_cache[0] != self.registry.generation:
            self._openapi_cache = (self.registry.generation, openapi.root(self.registry))
        if len(parts) == 2:
            return _json(self._openapi_cache[1])
        rest = parts[2:]
        if rest[0] == "api" and len(rest) == 2:
            doc = openapi.document(self.registry, "", rest[1])
        elif rest[0] == "apis" and len(rest) == 3:
            doc = openapi.document(self.registry, rest[1], rest[2])
        else:
            doc = None
        if doc is None:
            raise _not_found()
        return _json(doc)

    async def _resource(
        self,
        request: web.Request,
        user: authorizing.User,
        group: str,
        version: str,
        rest: list[str],
    ) -> web.StreamResponse:
        namespace: str | None = None
        if (
            rest[0] == "namespaces"
            and len(rest) >= 3
            and not (group == "" and len(rest) == 3 and rest[2] in ("status", "finalize"))
        ):
            namespace, rest = rest[1], rest[2:]
        if len(rest) > 3:
            raise _not_found()
        resource = rest[0]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else ""
        t = self.registry.get(group, version, resource)
        if t is None or (namespace is not None and not t.namespaced):
            raise _not_found()
        if t.namespaced and name is not None and namespace is None:
            raise _not_found()
        if sub and sub not in t.subresources:
            raise _not_found()
        ns = namespace or ""
        m = request.method
        if t.namespaced and namespace is None and m in ("POST", "DELETE"):
            # The all-namespaces path serves list and watch only: a deletecollection here
            # emptied every namespace, kube-system included.
            raise statuses.method_not_allowed()
        if self.gate.rbac:
            watch = _bool(request.query.get("watch"))
            # A list or watch pinned to one name (kubectl get NAME -w, delete --wait) is
            # authorized for that name, so resourceNames rules cover it (RequestInfoFactory).
            pinned = None
            if name is None and m in ("GET", "HEAD"):
                pinned = selectors.single_name(request.query.get("fieldSelector"))
            self.gate.authorize(
                user,
                authorizing.Attributes(
                    authorizing.verb(m, named=name is not None, watch=watch, subresource=sub),
                    group,
                    resource,
                    sub,
                    ns,
                    name or pinned or "",
                ),
            )
        if sub == "exec" and name is not None:  # issue 4: relayed to the pod's kubelet
            pod = self.cluster.get(t, ns, name)
            node = self.store.get(("", "nodes", "", (pod.get("spec") or {}).get("nodeName") or ""))
            return await podproxy.exec_(request, pod, node, ns, name)
        if m in ("GET", "HEAD"):
            if name is None:
                return await self._list(request, t, namespace)
            if sub in ("", "status"):
                return self._answer(request, t, [self.cluster.get(t, ns, name)], single=True)
            return await subresources.get(request, self.cluster, t, ns, name, sub=sub)
        opts = handling.WriteOptions(
            dry_run=bool(request.query.get("dryRun")),
            manager=request.query.get("fieldManager")
            or _manager_from_agent(request.headers.get("User-Agent", "")),
            field_validation=request.query.get("fieldValidation", "Warn"),
            force=_bool(request.query.get("force")),
        )
        if m == "POST":
            body = await self._body(request)
            if name is None:
                out = self.cluster.create(t, ns, body, opts)
                return _json(out.obj, 201, out.warnings)
            if sub == "token" and t.resource == "serviceaccounts":
                self.cluster.get(t, ns, name)  # 404 for a ServiceAccount that does not exist
                return _json(self.gate.tokens.token_request(ns, name), 201)
            if sub in ("binding", "eviction"):
                return _json(subresources.post(self.cluster, t, ns, name, sub=sub, body=body), 201)
            raise statuses.method_not_allowed()
        if m == "PUT" and name is not None:
            body = await self._body(request)
            if sub == "scale":
                return _json(
                    subresources.put_scale(self.cluster, t, ns, name, body=body, opts=opts)
                )
            out = self.cluster.update(t, ns, name, body, opts=opts, sub=sub)
            return _json(out.obj, 200, out.warnings)
        if m == "PATCH" and name is not None:
            ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
            body = await self._body(request)
            if sub == "scale":
                return _json(
                    subresources.patch_scale(
                        self.cluster, t, ns, name, ctype=ctype, body=body, opts=opts
                    )
                )
            out = self.cluster.patch(t, ns, name, ctype, body, opts=opts, sub=sub)
            return _json(out.obj, 201 if out.created else 200, out.warnings)
        if m == "DELETE":
            body = await self._body(request, optional=True)
            options = body if isinstance(body, dict) else {}
            policy = request.query.get("propagationPolicy") or options.get("propagationPolicy")
            if (
                _bool(request.query.get("orphanDependents"))
                or options.get("orphanDependents") is True
            ):
                policy = "Orphan"
            grace_raw = request.query.get("gracePeriodSeconds", options.get("gracePeriodSeconds"))
            try:
                grace = int(grace_raw) if grace_raw is not None else None
            except (TypeError, ValueError):
                raise statuses.bad_request(f"invalid gracePeriodSeconds {grace_raw!r}") from None
            dry = opts.dry_run or bool(options.get("dryRun"))
            if name is not None:
                return _json(
                    self.cluster.delete(
                        t,
                        ns,
                        name,
                        policy=policy,
                        grace=grace,
                        preconditions=options.get("preconditions"),
                        dry_run=dry,
                    )
                )
            items = self._select(request, t, namespace)
            deleted = []
            for obj in items:
                meta = obj.get("metadata") or {}
                with contextlib.suppress(statuses.ApiError):
                    deleted.append(
                        self.cluster.delete(
                            t,
                            meta.get("namespace", ""),
                            meta["name"],
                            policy=policy,
                            grace=grace,
                            dry_run=dry,
                        )
                    )
            return _json(
                {
                    "kind": t.list_kind,
                    "apiVersion": t.api_version,
                    "metadata": {"resourceVersion": str(self.store.rv)},
                    "items": deleted,
                }
            )
        raise statuses.method_not_allowed()

    async def _body(self, request: web.Request, *, optional: bool = False) -> Any:
        if request.content_length is not None and request.content_length > MAX_BODY:
            raise web.HTTPRequestEntityTooLarge(
                max_size=MAX_BODY, actual_size=request.content_length
            )
        raw = await request.read()
        if not raw.strip():
            if optional:
                return None
            raise statuses.bad_request("the request body is empty")
        ctype = request.headers.get("Content-Type", "application/json").split(";")[0].strip()
        if ctype == "application/vnd.kubernetes.protobuf":
            return protobuf.decode(raw)
        try:
            if "yaml" in ctype:
                return yaml.load(raw, Loader=_YAML_LOADER)  # noqa: S506 (a safe loader: C or pure Python)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            what = "yaml" if "yaml" in ctype else "json"
            raise statuses.bad_request(
                f"the body of the request could not be decoded: {what} parse error: {exc}"
            ) from None

    def _select(self, request: web.Request, t: ResourceType, namespace: str | None) -> list[Obj]:
        label = selectors.parse_labels(request.query.get("labelSelector"))
        field = selectors.parse_fields(
            request.query.get("fieldSelector"), selectors.field_labels(t)
        )
        return [o for o in self.cluster.objects(t, namespace) if label(o) and field(o)]

    async def _list(
        self, request: web.Request, t: ResourceType, namespace: str | None
    ) -> web.StreamResponse:
        q = request.query
        if _bool(q.get("watch")):
            listing.count(q, "timeoutSeconds")
            label = selectors.parse_labels(q.get("labelSelector"))
            field = selectors.parse_fields(q.get("fieldSelector"), selectors.field_labels(t))
            return await watching.serve(
                request,
                store=self.store,
                t=t,
                namespace=namespace,
                match=lambda o: label(o) and field(o),
                bookmark_interval=self.bookmark_interval,
            )
        items, meta = listing.page(self._select(request, t, namespace), q, self.store)
        return self._answer(request, t, items, meta=meta)

    def _answer(
        self,
        request: web.Request,
        t: ResourceType,
        items: list[Obj],
        *,
        single: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> web.Response:
        if tables.wants_table(request.headers.get("Accept", "")):
            tmeta = meta or {
                "resourceVersion": (items[0].get("metadata") or {}).get("resourceVersion", "")
            }
            return _json(
                tables.table(
                    t,
                    items,
                    include=request.query.get("includeObject", "Metadata"),
                    list_meta=tmeta,
                )
            )
        if single:
            return _json(items[0])
        return _json(
            {
                "kind": t.list_kind,
                "apiVersion": t.api_version,
                "metadata": meta or {},
                "items": items,
            }
        )


def _manager_from_agent(agent: str) -> str:
    """The default field manager: the User-Agent up to its first '/', as the real server derives it."""
    return (agent.split("/", maxsplit=1)[0] or "unknown")[:128]


async def serve_forever(
    directory: Path,
    host: str,
    port: int,
    port_file: Path | None,
    *,
    authorization: str = "AlwaysAllow",
    tls: tuple[Path, Path] | None = None,
) -> None:
    server = ApiServer(directory, authorization=authorization)
    ctx = None
    if tls is not None:
        from pot.localcluster import pki

        ctx = pki.server_context(*tls)
    try:
        bound = await server.start(host, port, ctx)
    except OSError:
        # The port used last time is taken: any free one will do (a new kubeconfig is written).
        bound = await server.start(host, 0, ctx)
    if port_file is not None:
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(str(bound))
        tmp.replace(port_file)
    scheme = "https" if tls else "http"
    log.info("API server on %s://%s:%d (state in %s)", scheme, host, bound, directory)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pot.localcluster.apiserver", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--dir", type=Path, required=True, help="state directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--port-file", type=Path, default=None, help="write the bound port here once serving"
    )
    parser.add_argument(
        "--authorization-mode",
        choices=MODES,
        default="AlwaysAllow",
        help="RBAC: requests with a ServiceAccount token must pass the stored RBAC rules",
    )
    parser.add_argument("--tls-cert", type=Path, default=None, help="serve HTTPS (PEM)")
    parser.add_argument("--tls-key", type=Path, default=None, help="its key (PEM)")
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s apiserver %(levelname)s %(message)s"
    )
    try:
        asyncio.run(
            serve_forever(
                args.dir,
                args.host,
                args.port,
                args.port_file,
                authorization=args.authorization_mode,
                tls=tls,
            )
        )
    except errors.PotError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        sys.exit(1)


if __name__ == "__main__":
    main()
