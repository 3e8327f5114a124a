"""A small asyncio Kubernetes client for the cluster's own components.

The scheduler, controllers and kubelet talk to the API server only over HTTP,
exactly as real ones do (list, then watch from the list's resourceVersion,
relist on 410 Gone; status through the ``status`` subresource; binding through
``pods/binding``), so the API server cannot tell them from real components and
the operator sees the same object histories it would on a real cluster. The
official client is synchronous; this one is ~200 lines of aiohttp and keeps
every component on one event loop.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from pot import errors

log = logging.getLogger(__name__)
Obj = dict[str, Any]


class ApiFailure(errors.ClusterError):
    """The API server refused a request; ``code`` and ``reason`` come from its Status."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the API server is and how to authenticate to it."""

    server: str
    token: str | None = None
    ssl_context: ssl.SSLContext | bool = True


def _data_file(data: str) -> str:
    fh = tempfile.NamedTemporaryFile(delete=False, suffix=".pem")  # noqa: SIM115 (kept for ssl)
    fh.write(base64.b64decode(data))
    fh.close()
    return fh.name


def load_kubeconfig(path: Path) -> Endpoint:
    """The current context's server and credentials from a kubeconfig file."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise errors.ConfigError(f"{path}: cannot read kubeconfig ({exc})") from exc
    current = doc.get("current-context")
    contexts = {c["name"]: c["context"] for c in doc.get("contexts") or []}
    ctx: dict[str, Any] = contexts.get(current) or next(iter(contexts.values()), {})
    clusters = {c["name"]: c["cluster"] for c in doc.get("clusters") or []}
    users = {u["name"]: u.get("user") or {} for u in doc.get("users") or []}
    cluster = clusters.get(ctx.get("cluster")) or next(iter(clusters.values()))
    user = users.get(ctx.get("user")) or {}
    server = cluster["server"].rstrip("/")
    ssl_ctx: ssl.SSLContext | bool = True
    if server.startswith("https"):
        if cluster.get("insecure-skip-tls-verify"):
            ssl_ctx = False
        else:
            ssl_ctx = ssl.create_default_context()
            if cluster.get("certificate-authority-data"):
                ssl_ctx.load_verify_locations(_data_file(cluster["certificate-authority-data"]))
            elif cluster.get("certificate-authority"):
                ssl_ctx.load_verify_locations(cluster["certificate-authority"])
        if user.get("client-certificate-data"):
            ctx_ = ssl_ctx if isinstance(ssl_ctx, ssl.SSLContext) else ssl.create_default_context()
            if ssl_ctx is False:
                ctx_.check_hostname = False
                ctx_.verify_mode = ssl.CERT_NONE
            ctx_.load_cert_chain(
                _data_file(user["client-certificate-data"]), _data_file(user["client-key-data"])
            )
            ssl_ctx = ctx_
    return Endpoint(server=server, token=user.get("token"), ssl_context=ssl_ctx)


def path_for(api_version: str, resource: str, namespace: str | None = None, name: str = "") -> str:
    """URL path of a collection or object (``name`` may carry a subresource)."""
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace:
        base += f"/namespaces/{namespace}"
    base += f"/{resource}"
    return f"{base}/{name}" if name else base


class Api:
    """Requests against one API server, over one keep-alive connection pool."""

    def __init__(self, endpoint: Endpoint, *, user_agent: str = "pot-localcluster") -> None:
        self.endpoint = endpoint
        headers = {"User-Agent": user_agent, "Accept": "application/json"}
        if endpoint.token:
            headers["Authorization"] = f"Bearer {endpoint.token}"
        self._headers = headers
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared session, created on the running loop."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                connector=aiohttp.TCPConnector(limit=32, ssl=self.endpoint.ssl_context),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            )
        return self._session

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 30,
    ) -> Obj:
        """One request; returns the decoded JSON body or raises ApiFailure/ClusterError."""
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else {}
        try:
            async with self.session.request(
                method,
                self.endpoint.server + path,
                data=data,
                params=params,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                text = await resp.text()
                if resp.status >= 400:
                    raise _failure(resp.status, text)
                return json.loads(text) if text else {}
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise errors.ClusterError(f"{method} {path}: {exc!r}") from exc

    async def get(self, path: str, **params: str) -> Obj:
        """GET an object or a list."""
        return await self.request("GET", path, params=params or None)

    async def create(self, path: str, body: Obj) -> Obj:
        """POST ``body`` to a collection."""
        return await self.request("POST", path, body)

    async def patch(self, path: str, patch: Obj, *, kind: str = "merge") -> Obj:
        """PATCH with a merge (default), strategic or json patch."""
        ctype = {
            "merge": "application/merge-patch+json",
            "strategic": "application/strategic-merge-patch+json",
            "json": "application/json-patch+json",
        }[kind]
        return await self.request("PATCH", path, patch, content_type=ctype)

    async def delete(self, path: str, *, grace: int | None = None, uid: str | None = None) -> Obj:
        """DELETE, optionally with a grace period and a uid precondition."""
        body: Obj = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace is not None:
            body["gracePeriodSeconds"] = grace
        if uid:
            body["preconditions"] = {"uid": uid}
        return await self.request("DELETE", path, body)

    async def watch(
        self, path: str, resource_version: str, *, params: dict[str, str] | None = None
    ) -> AsyncIterator[tuple[str, Obj]]:
        """Watch events from ``resource_version``; ApiFailure(410) when too old."""
        query = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "300",
            **(params or {}),
        }
        try:
            async with self.session.get(
                self.endpoint.server + path,
                params=query,
                timeout=aiohttp.ClientTimeout(total=None, sock_read=330),
            ) as resp:
                if resp.status >= 400:
                    raise _failure(resp.status, await resp.text())
                buffer = b""
                async for chunk in resp.content.iter_any():
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        if event.get("type") == "ERROR":
                            status = event.get("object") or {}
                            raise ApiFailure(
                                int(status.get("code") or 500),
                                str(status.get("reason") or "Error"),
                                str(status.get("message") or ""),
                            )
                        yield event["type"], event["object"]
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise errors.ClusterError(f"watch {path}: {exc!r}") from exc


def _failure(code: int, text: str) -> ApiFailure:
    try:
        status = json.loads(text)
        return ApiFailure(code, str(status.get("reason") or code), str(status.get("message")))
    except (ValueError, AttributeError):
        return ApiFailure(code, str(code), text[:200])


def key_of(obj: Obj) -> str:
    """``namespace/name`` (or ``name`` for cluster-scoped objects)."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


def _rv(obj: Obj) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class Informer:
    """A list+watch cache of one resource, calling ``on_change(type, obj)`` per event.

    Writes a component makes can be put into the cache at once (``remember``)
    so the next reconcile does not act on a stale view (client-go's
    "expectations"); watch events older than what is cached are ignored.
    """

    def __init__(
        self,
        api: Api,
        path: str,
        on_change: Callable[[str, Obj], None] | None = None,
        *,
        params: dict[str, str] | None = None,
    ) -> None:
        self.api = api
        self.path = path
        self.params = params or {}
        self.handlers: list[Callable[[str, Obj], None]] = [on_change] if on_change else []
        self.cache: dict[str, Obj] = {}
        self.synced = asyncio.Event()

    def remember(self, obj: Obj) -> None:
        """Put an object this component just wrote into the cache."""
        key = key_of(obj)
        old = self.cache.get(key)
        if old is None or _rv(obj) >= _rv(old):
            self.cache[key] = obj
            self._notify("MODIFIED" if old else "ADDED", obj)

    def forget(self, obj: Obj) -> None:
        """Drop an object this component just deleted."""
        if self.cache.pop(key_of(obj), None) is not None:
            self._notify("DELETED", obj)

    def add_handler(self, handler: Callable[[str, Obj], None]) -> None:
        """Also call ``handler(type, obj)`` on every change."""
        self.handlers.append(handler)

    def _notify(self, kind: str, obj: Obj) -> None:
        for handler in self.handlers:
            try:
                handler(kind, obj)
            except Exception:
                log.exception("handler of %s failed on %s", self.path, key_of(obj))

    def _apply(self, kind: str, obj: Obj) -> None:
        key = key_of(obj)
        old = self.cache.get(key)
        if kind == "DELETED":
            if (
                old is not None
                and _rv(old) > _rv(obj)
                and old["metadata"].get("uid") != obj["metadata"].get("uid")
            ):
                return  # a newer object of the same name already replaced it
            self.cache.pop(key, None)
        else:
            if old is not None and _rv(old) > _rv(obj):
                return
            self.cache[key] = obj
        self._notify(kind, obj)

    async def run(self) -> None:
        """List and watch forever (cancel to stop)."""
        while True:
            try:
                listing = await self.api.get(self.path, **self.params)
                rv = str((listing.get("metadata") or {}).get("resourceVersion") or "0")
                fresh = {key_of(o): o for o in listing.get("items") or []}
                for key, old in list(self.cache.items()):
                    if key not in fresh:
                        self._apply("DELETED", old)
                for obj in fresh.values():
                    obj.setdefault("kind", listing.get("kind", "List").removesuffix("List"))
                    obj.setdefault("apiVersion", listing.get("apiVersion", "v1"))
                    self._apply("MODIFIED" if key_of(obj) in self.cache else "ADDED", obj)
                self.synced.set()
                while True:
                    async for kind, obj in self.api.watch(self.path, rv, params=self.params):
                        rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                        if kind != "BOOKMARK":
                            self._apply(kind, obj)
            except ApiFailure as exc:
                if exc.code != 410:
                    log.warning("informer %s: %s", self.path, exc)
                    await asyncio.sleep(1)
            except errors.ClusterError as exc:
                log.debug("informer %s: %s (retrying)", self.path, exc)
                await asyncio.sleep(0.5)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("informer %s failed; relisting", self.path)
                await asyncio.sleep(1)


async def ignore_missing(coro: Any) -> Obj | None:
    """Await an API call, treating 404 (already gone) as success."""
    try:
        result: Obj = await coro
        return result
    except ApiFailure as exc:
        if exc.code == 404:
            return None
        raise


__all__ = ["Api", "ApiFailure", "Endpoint", "Informer", "key_of", "load_kubeconfig", "path_for"]
