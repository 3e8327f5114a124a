"""API errors and the ``Status`` objects the real API server answers with.

Clients branch on ``Status.reason`` and ``code`` (client-go's
``errors.IsNotFound``/``IsConflict``/``IsInvalid``, kopf's ``APIConflictError``,
kubectl's "Error from server (NotFound): ..."), so every refusal the local
cluster makes is an :class:`ApiError` that renders exactly like the real
server's (API conventions, "Response Status Kind").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pot import errors


@dataclass(frozen=True, slots=True)
class Cause:
    """One reason an object was refused: ``field`` is a path such as ``spec.replicas``."""

    field: str
    reason: str
    message: str


class ApiError(errors.ClusterError):
    """A request the API server refuses; rendered as a ``Status`` object."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        name: str | None = None,
        group: str | None = None,
        kind: str | None = None,
        causes: list[Cause] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.name = name
        self.group = group
        self.kind = kind
        self.causes = causes or []
        self.retry_after = retry_after

    def status(self) -> dict[str, Any]:
        """The ``Status`` body (kind Status, apiVersion v1)."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        details: dict[str, Any] = {}
        if self.name is not None:
            details["name"] = self.name
        if self.group:
            details["group"] = self.group
        if self.kind:
            details["kind"] = self.kind
        if self.causes:
            details["causes"] = [
                {"reason": c.reason, "message": c.message, "field": c.field} for c in self.causes
            ]
        if self.retry_after is not None:
            details["retryAfterSeconds"] = self.retry_after
        if details:
            body["details"] = details
        return body


@dataclass(frozen=True, slots=True)
class Target:
    """What a request addresses, for error messages: ``trainingtasks.pot.dev "x"``."""

    resource: str
    group: str
    name: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def qualified(self) -> str:
        return f"{self.resource}.{self.group}" if self.group else self.resource


def not_found(t: Target) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{t.qualified} "{t.name}" not found',
        name=t.name,
        group=t.group,
        kind=t.resource,
    )


def already_exists(t: Target) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{t.qualified} "{t.name}" already exists',
        name=t.name,
        group=t.group,
        kind=t.resource,
    )


def conflict(t: Target, why: str = "") -> ApiError:
    why = (
        why
        or "the object has been modified; please apply your changes to the latest version and try again"
    )
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {t.qualified} "{t.name}": {why}',
        name=t.name,
        group=t.group,
        kind=t.resource,
    )


def invalid(kind: str, group: str, name: str, causes: list[Cause]) -> ApiError:
    """422 Invalid: ``Kind.group "name" is invalid: field: message, ...`` as the real server."""
    what = f"{kind}.{group}" if group else kind
    parts = [f"{c.field}: {c.message}" if c.field else c.message for c in causes]
    summary = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    return ApiError(
        422,
        "Invalid",
        f'{what} "{name}" is invalid: {summary}',
        name=name,
        group=group,
        kind=kind,
        causes=causes,
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def method_not_allowed(
    message: str = "the server does not allow this method on the requested resource",
) -> ApiError:
    return ApiError(405, "MethodNotAllowed", message)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def success(details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``Status`` of success (deletecollection and some deletes answer with it)."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
    }
    if details:
        body["details"] = details
    return body
