"""Client of the validators' HTTP API (docs/protocol.md, port 8080).

The operator registers tasks (``POST /v1/tasks``), mirrors their progress
(``GET /v1/tasks/{ns}/{name}``) and reads each replica's view
(``GET /v1/status``). aiohttp errors never leave this module: refusals become
``pot.errors.ProtocolError`` subclasses with the replica's words, unreachable
replicas ``Unavailable``, so callers decide between failing a task (the
validators said its spec is bad) and retrying (they could not be asked).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from pot import errors, keys, signing


class Unavailable(errors.ProtocolError):
    """No replica answered (connection refused, timeout, 5xx)."""


class Rejected(errors.ProtocolError):
    """A replica refused the request (4xx); ``field`` names the bad spec field when given."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class Client:
    """Talks to a ValidatorSet through any of its replicas' base URLs."""

    def __init__(self, *, timeout: float = 5.0, signer: keys.Key | None = None) -> None:
        self.signer = signer
        """The operator's key: it signs registrations (never logged; repr shows the address)."""
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self.requests = 0

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared session (created on the running loop)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        """Close the pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, url: str, body: Any = None) -> tuple[int, Any]:
        self.requests += 1
        try:
            async with self.session.request(method, url, json=body) as resp:
                text = await resp.text()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise Unavailable(f"{method} {url}: {exc.__class__.__name__} {exc}".strip()) from exc
        try:
            doc = json.loads(text) if text else {}
        except json.JSONDecodeError:
            doc = {"error": text[:200]}
        return status, doc

    async def _first(
        self, method: str, bases: Sequence[str], suffix: str, body: Any = None
    ) -> tuple[int, Any]:
        """Ask replicas in turn until one answers below 500."""
        if not bases:
            raise Unavailable("no validator replica has an address yet")
        last: Exception | None = None
        for base in bases:
            try:
                status, doc = await self._call(method, base.rstrip("/") + suffix, body)
            except Unavailable as exc:
                last = exc
                continue
            if status >= 500:
                last = Unavailable(
                    f"{method} {base}{suffix}: HTTP {status} {doc.get('error', '') if isinstance(doc, dict) else ''}"
                )
                continue
            return status, doc
        raise Unavailable(str(last))

    async def register(
        self,
        bases: Sequence[str],
        task_id: str,
        spec: Mapping[str, Any],
        miners: Sequence[str] = (),
        *,
        uid: str,
    ) -> Mapping[str, Any]:
        """``POST /v1/tasks`` binding each node rank to its miner address (``miners``, in rank
        order; empty: unbound) and to the TrainingTask object ``uid`` (the replays' run seed
        derives from it), signed with the operator's key if it has one. Rejected on 4xx
        (naming the field), Unavailable otherwise."""
        body: dict[str, Any] = {"id": task_id, "spec": dict(spec), "uid": uid}
        if miners:
            body["miners"] = list(miners)
        if self.signer is not None:
            body["signature"] = signing.sign_registration(
                self.signer, task_id, body["spec"], list(miners), uid
            )
        status, doc = await self._first("POST", bases, "/v1/tasks", body)
        if status >= 400:
            doc = doc if isinstance(doc, dict) else {}
            raise Rejected(str(doc.get("error") or f"HTTP {status}"), str(doc.get("field") or ""))
        return doc if isinstance(doc, dict) else {}

    async def task(self, bases: Sequence[str], task_id: str) -> Mapping[str, Any] | None:
        """``GET /v1/tasks/{ns}/{name}``; None when the validators do not know it (404)."""
        status, doc = await self._first("GET", bases, f"/v1/tasks/{task_id}")
        if status == 404:
            return None
        if status >= 400 or not isinstance(doc, dict):
            raise Unavailable(f"GET /v1/tasks/{task_id}: HTTP {status}")
        return doc

    async def status(self, base: str) -> Mapping[str, Any] | None:
        """One replica's ``GET /v1/status``; None when it does not answer."""
        try:
            status, doc = await self._call("GET", base.rstrip("/") + "/v1/status")
        except Unavailable:
            return None
        return doc if status == 200 and isinstance(doc, dict) else None
