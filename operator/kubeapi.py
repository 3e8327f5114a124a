"""A small asyncio client of the Kubernetes API for the operator's writes.

kopf watches and indexes; this client creates, patches and deletes the
children and writes statuses. Why not the official client: it is synchronous
(a thread per call, ~60 MB of generated models), and the operator wants every
request counted (the bench reports API requests per task against the
minimum) and every failure wrapped in ``pot.errors`` (STYLE: wrap what you
don't own). Credentials come from kopf's login (kubeconfig, in-cluster
service account), so the operator authenticates once, one way.
"""

from __future__ import annotations

import json
import ssl
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

from pot import errors
from pot.operator import metrics

Obj = dict[str, Any]
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


class ApiError(errors.ClusterError):
    """The API server refused a request (``code`` from its Status)."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason


class NotFound(ApiError):
    """404."""


class Conflict(ApiError):
    """409: already exists, or a stale resourceVersion."""


def path(
    api_version: str, plural: str, namespace: str | None, name: str = "", sub: str = ""
) -> str:
    """URL path of a collection, object or subresource."""
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace:
        base += f"/namespaces/{namespace}"
    base += f"/{plural}"
    if name:
        base += f"/{name}"
    if sub:
        base += f"/{sub}"
    return base


def controllers(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ownerReferences of ``obj`` that mark its controller (at most one, in practice)."""
    return [o for o in obj["metadata"].get("ownerReferences") or [] if o.get("controller")]


def _pem(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    if b"-----BEGIN" not in raw:
        import base64

        raw = base64.b64decode(raw)
    fh = tempfile.NamedTemporaryFile(delete=False, suffix=".pem")  # noqa: SIM115 - kept for ssl
    fh.write(raw)
    fh.close()
    return fh.name


def _refusal(code: int, status: Mapping[str, Any], what: str) -> ApiError:
    """The ApiError (subclass) for an API server's Status."""
    cls = NotFound if code == 404 else Conflict if code == 409 else ApiError
    return cls(code, str(status.get("reason", "")), f"{what}: {status.get('message', '')}")


class Client:
    """Requests against one API server over one keep-alive pool; counts every request."""

    def __init__(self) -> None:
        self.server = ""
        self._headers: dict[str, str] = {}
        self._ssl: ssl.SSLContext | bool = True
        self._session: aiohttp.ClientSession | None = None
        self.requests: Counter[str] = Counter()

    def configure(self, info: Any) -> None:
        """Take server and credentials from a ``kopf.ConnectionInfo``."""
        self.server = str(info.server).rstrip("/")
        headers = {"Accept": "application/json", "User-Agent": "pot-operator"}
        if info.token:
            headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
        self._headers = headers
        if self.server.startswith("https"):
            if info.insecure:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            else:
                ctx = ssl.create_default_context()
                if info.ca_path:
                    ctx.load_verify_locations(str(info.ca_path))
                elif info.ca_data:
                    ctx.load_verify_locations(_pem(info.ca_data))
            cert = info.certificate_path or (info.certificate_data and _pem(info.certificate_data))
            key = info.private_key_path or (info.private_key_data and _pem(info.private_key_data))
            if cert:
                ctx.load_cert_chain(str(cert), str(key) if key else None)
            self._ssl = ctx

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared session (created on the running loop)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self._headers, timeout=aiohttp.ClientTimeout(total=30)
            )
        return self._session

    async def close(self) -> None:
        """Close the pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        url_path: str,
        *,
        body: Any = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
        kind: str = "",
    ) -> Obj:
        """One request; ApiError subclasses for refusals, ClusterError when unreachable."""
        if not self.server:
            raise errors.ClusterError("the Kubernetes API client is not configured (no login yet)")
        resource = kind or url_path.rsplit("/", 2)[-2]
        self.requests[f"{method} {resource}"] += 1
        metrics.API_REQUESTS.labels(method, resource).inc()
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else {}
        try:
            async with self.session.request(
                method,
                self.server + url_path,
                data=data,
                headers=headers,
                params=params,
                ssl=self._ssl,
            ) as resp:
                text = await resp.text()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise errors.ClusterError(
                f"{method} {url_path}: API server unreachable ({exc})"
            ) from exc
        try:
            doc: Obj = json.loads(text) if text else {}
        except json.JSONDecodeError:
            doc = {"message": text[:200]}
        if status >= 400:
            doc.setdefault("message", text[:200])
            raise _refusal(status, doc, f"{method} {url_path}")
        return doc

    async def watch(
        self, url_path: str, params: Mapping[str, str], *, kind: str = ""
    ) -> AsyncIterator[tuple[str, Obj]]:
        """Stream ``(type, object)`` watch events until the server ends the stream.

        An ERROR event raises its Status as ApiError (410 Gone: the resourceVersion
        is too old, relist); a broken or silent connection raises ClusterError.
        """
        if not self.server:
            raise errors.ClusterError("the Kubernetes API client is not configured (no login yet)")
        resource = kind or url_path.rsplit("/", 1)[-1]
        self.requests[f"WATCH {resource}"] += 1
        metrics.API_REQUESTS.labels("WATCH", resource).inc()
        quiet = float(params.get("timeoutSeconds") or 300) + 30  # bookmarks come sooner
        try:
            async with self.session.get(
                self.server + url_path,
                params={**params, "watch": "true"},
                ssl=self._ssl,
                timeout=aiohttp.ClientTimeout(total=None, sock_read=quiet),
            ) as resp:
                if resp.status >= 400:
                    text = await resp.text()
                    try:
                        doc = json.loads(text)
                    except json.JSONDecodeError:
                        doc = {"message": text[:200]}
                    raise _refusal(resp.status, doc, f"watch {url_path}")
                buffer = b""
                async for chunk in resp.content.iter_any():  # no line-length limit: pods are big
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        obj = event.get("object") or {}
                        if event.get("type") == "ERROR":
                            raise _refusal(int(obj.get("code") or 500), obj, f"watch {url_path}")
                        yield str(event.get("type")), obj
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            raise errors.ClusterError(f"watch {url_path}: stream broken ({exc!r})") from exc

    # -- verbs -------------------------------------------------------------------
    async def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> Obj:
        """GET one object."""
        return await self.request("GET", path(api_version, plural, namespace, name), kind=plural)

    async def create(self, body: Mapping[str, Any], plural: str) -> Obj | None:
        """POST; None when an object of that name already exists (idempotent create)."""
        ns = body["metadata"].get("namespace")
        try:
            return await self.request(
                "POST", path(body["apiVersion"], plural, ns), body=body, kind=plural
            )
        except Conflict as exc:
            if exc.reason == "AlreadyExists" or "already exists" in str(exc):
                return None
            raise

    async def patch(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        sub: str = "",
        content_type: str = MERGE,
    ) -> Obj:
        """PATCH (merge patch unless told otherwise)."""
        url = path(api_version, plural, namespace, name, sub)
        return await self.request(
            "PATCH",
            url,
            body=patch,
            content_type=content_type,
            kind=f"{plural}{'/' + sub if sub else ''}",
        )

    async def replace(self, body: Mapping[str, Any], plural: str) -> Obj:
        """PUT (an update guarded by the body's resourceVersion)."""
        meta = body["metadata"]
        url = path(body["apiVersion"], plural, meta.get("namespace"), meta["name"])
        return await self.request("PUT", url, body=body, kind=plural)

    async def delete(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        name: str,
        *,
        uid: str = "",
        grace: int | None = None,
    ) -> bool:
        """DELETE (uid-preconditioned when given; ``grace`` 0 forces); False when already gone."""
        body: Obj = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if grace is not None:
            body["gracePeriodSeconds"] = grace
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self.request(
                "DELETE", path(api_version, plural, namespace, name), body=body, kind=plural
            )
        except NotFound:
            return False
        except Conflict:
            return False  # the uid changed: that object is already gone
        return True

    async def apply(self, body: Mapping[str, Any], plural: str) -> Obj | None:
        """Create, or merge-patch an existing object to the desired state (create-or-patch)."""
        created = await self.create(body, plural)
        if created is not None:
            return created
        meta = body["metadata"]
        patch = {k: v for k, v in body.items() if k not in ("apiVersion", "kind", "status")}
        return await self.patch(
            body["apiVersion"], plural, meta.get("namespace"), meta["name"], patch
        )
