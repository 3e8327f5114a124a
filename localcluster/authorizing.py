"""Who is asking, and may they: ServiceAccount tokens and RBAC for the local cluster.

Pods act as their ServiceAccount: the kubelet asks the API server for a token
(``POST .../serviceaccounts/NAME/token``, TokenRequest) and puts it in the
pod's kubeconfig. A request with such a token is user
``system:serviceaccount:NS:NAME`` in groups ``system:serviceaccounts``,
``system:serviceaccounts:NS`` and ``system:authenticated``; a token this
server did not mint, or one of a ServiceAccount since deleted, gets 401.

With ``--authorization-mode RBAC`` those requests must pass the Roles,
ClusterRoles and bindings the server stores, evaluated as the real RBAC
authorizer does (Kubernetes docs, "Using RBAC Authorization"); discovery and
OpenAPI stay open to them (``system:discovery``). So an operator whose chart
grants too little fails here as it would on a real cluster, not only on kind.
That mode also serves HTTPS (:mod:`pki`; client-go sends bearer tokens only
over TLS, kubernetes/kubectl#744) and requires a token on every request but
``GET /healthz|livez|readyz|version``: the kubeconfig ``pot local up`` writes
carries the admin token (user ``pot-admin``, group ``system:masters``).

Without RBAC mode (plain HTTP) a request without a token is the administrator,
as on the real server's old localhost-only insecure port; tokens are still
checked, so a pod acts as its ServiceAccount either way.

Tokens are HMAC-SHA256 over the ServiceAccount under a key kept in the state
directory (mode 0600), so they survive restarts and nothing is stored per
token. ``kubectl auth can-i`` (SelfSubjectAccessReview) and ``--as``
(impersonation, checked as the verb ``impersonate``) work. Not modelled: token
expiry and audiences, pod-bound tokens, aggregated ClusterRoles
(``aggregationRule``), SubjectAccessReviews for others, ``can-i --list``.
Pure (no I/O of its own): the API server hands the gate its store.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pot.localcluster import statuses

Obj = Mapping[str, Any]
RBAC_GROUP = "rbac.authorization.k8s.io"

MASTERS = "system:masters"
PUBLIC_PATHS = frozenset({"healthz", "livez", "readyz", "version"})
"""First path segments anyone may GET without a token (``system:public-info-viewer``)."""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    groups: tuple[str, ...]


ADMIN = User("pot-admin", (MASTERS, "system:authenticated"))
"""The admin token's user, and who a request without a token is when not in RBAC mode."""


def service_account_user(namespace: str, name: str) -> User:
    return User(
        f"system:serviceaccount:{namespace}:{name}",
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"),
    )


@dataclass(frozen=True, slots=True)
class Attributes:
    """What a resource request does, in RBAC's terms."""

    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    @property
    def qualified(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def verb(method: str, *, named: bool, watch: bool, subresource: str = "") -> str:
    """The RBAC verb of an HTTP request (``watch`` is a ``?watch=true`` list)."""
    if subresource == "exec":
        return "create"  # exec over a WebSocket GET needs create, as on Kubernetes >= 1.31
    if method in ("GET", "HEAD"):
        return "get" if named else ("watch" if watch else "list")
    if method == "DELETE":
        return "delete" if named else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


# ---------------------------------------------------------------------- tokens


class Tokens:
    """Mints and checks bearer tokens under one secret key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the token key must be at least 32 bytes")
        self._key = key

    def _tag(self, subject: str) -> str:
        return hmac.new(self._key, subject.encode(), hashlib.sha256).hexdigest()[:40]

    def service_account(self, namespace: str, name: str) -> str:
        subject = f"{namespace}/{name}"
        encoded = base64.urlsafe_b64encode(subject.encode()).decode().rstrip("=")
        return f"pot-sa.{encoded}.{self._tag('sa:' + subject)}"

    def admin(self) -> str:
        """The administrator's token (``pot local up`` puts it in the kubeconfig)."""
        return "pot-admin." + self._tag("admin")

    def token_request(self, namespace: str, name: str) -> dict[str, Any]:
        """The answer to ``POST .../serviceaccounts/NAME/token`` (a TokenRequest)."""
        return {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"audiences": []},
            "status": {
                "token": self.service_account(namespace, name),
                "expirationTimestamp": "2100-01-01T00:00:00Z",  # not modelled: no expiry
            },
        }

    def authenticate(
        self, token: str, service_account_exists: Callable[[str, str], bool]
    ) -> User | None:
        """The user a token names, or None for a token this server did not mint (or one of a
        ServiceAccount that no longer exists)."""
        if hmac.compare_digest(token, self.admin()):
            return ADMIN
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != "pot-sa":
            return None
        try:
            subject = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        namespace, _, name = subject.partition("/")
        if not namespace or not name:
            return None
        if not hmac.compare_digest(parts[2], self._tag("sa:" + subject)):
            return None
        if not service_account_exists(namespace, name):
            return None
        return service_account_user(namespace, name)


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


# ---------------------------------------------------------------------- RBAC


def _subject_matches(subject: Obj, user: User, binding_namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return name == user.name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or binding_namespace
        return user.name == service_account_user(ns, str(name)).name
    return False


def _rule_allows(rule: Obj, a: Attributes) -> bool:
    verbs = rule.get("verbs") or ()
    if "*" not in verbs and a.verb not in verbs:
        return False
    groups = rule.get("apiGroups") or ()
    if "*" not in groups and a.group not in groups:
        return False
    resources = rule.get("resources") or ()
    if not (
        "*" in resources
        or a.qualified in resources
        # Real RBAC knows "*/<subresource>" but no "<resource>/*" (rbac ResourceMatches).
        or (a.subresource and f"*/{a.subresource}" in resources)
    ):
        return False
    names = rule.get("resourceNames") or ()
    return not names or (bool(a.name) and a.name in names)


def allowed(
    user: User,
    a: Attributes,
    *,
    cluster_bindings: Iterable[Obj],
    namespace_bindings: Iterable[Obj],
    role: Callable[[str, str, str], Obj | None],
) -> bool:
    """Whether RBAC grants ``a`` to ``user``. ``namespace_bindings`` are the RoleBindings of
    ``a.namespace``; ``role(kind, namespace, name)`` looks up a Role or ClusterRole."""
    if MASTERS in user.groups:
        return True
    grants: list[Obj | None] = []
    for b in cluster_bindings:
        if any(_subject_matches(s, user, "") for s in b.get("subjects") or ()):
            ref = b.get("roleRef") or {}
            if ref.get("kind") == "ClusterRole":
                grants.append(role("ClusterRole", "", ref.get("name", "")))
    if a.namespace:
        for b in namespace_bindings:
            ns = (b.get("metadata") or {}).get("namespace", "")
            if ns != a.namespace:
                continue
            if any(_subject_matches(s, user, ns) for s in b.get("subjects") or ()):
                ref = b.get("roleRef") or {}
                kind = ref.get("kind")
                if kind in ("Role", "ClusterRole"):
                    grants.append(role(kind, ns if kind == "Role" else "", ref.get("name", "")))
    return any(
        _rule_allows(rule, a) for r in grants if r is not None for rule in r.get("rules") or ()
    )


def forbidden_message(user: User, a: Attributes) -> str:
    """The real server's wording, which kubectl prints after "Error from server (Forbidden)"."""
    what = f'{a.qualified} "{a.name}"' if a.name else a.qualified
    where = f'in the namespace "{a.namespace}"' if a.namespace else "at the cluster scope"
    return (
        f'{what} is forbidden: User "{user.name}" cannot {a.verb} resource "{a.qualified}" '
        f'in API group "{a.group}" {where}'
    )


# ---------------------------------------------------------------------- the API server's gate


class Objects(Protocol):
    """What the gate reads from the API server's store."""

    def get(self, key: tuple[str, str, str, str]) -> Any: ...
    def objects(self, group: str, resource: str, namespace: str | None = None) -> Any: ...


class Gate:
    """Authentication and authorization as the API server applies them to each request."""

    def __init__(self, tokens: Tokens, store: Objects, *, rbac: bool) -> None:
        self.tokens = tokens
        self.store = store
        self.rbac = rbac

    def authenticate(self, header: str | None, head: str, method: str) -> User:
        """Who asks: the user of a token this server minted (401 for any other token); without
        one, the admin, or in RBAC mode nobody (401) except for the public paths."""
        token = bearer(header)
        if token is None:
            if not self.rbac or (head in PUBLIC_PATHS and method == "GET"):
                return ADMIN  # (the public paths never reach the authorizer)
            raise statuses.ApiError(401, "Unauthorized", "Unauthorized")
        user = self.tokens.authenticate(
            token, lambda ns, name: self.store.get(("", "serviceaccounts", ns, name)) is not None
        )
        if user is None:
            raise statuses.ApiError(401, "Unauthorized", "Unauthorized")
        return user

    def allows(self, user: User, a: Attributes) -> bool:
        """Whether ``user`` may do ``a`` (always, unless in RBAC mode)."""
        return not self.rbac or allowed(
            user,
            a,
            cluster_bindings=self.store.objects(RBAC_GROUP, "clusterrolebindings"),
            namespace_bindings=self.store.objects(RBAC_GROUP, "rolebindings", a.namespace)
            if a.namespace
            else (),
            role=lambda kind, ns, name: self.store.get(
                (RBAC_GROUP, "roles" if kind == "Role" else "clusterroles", ns, name)
            ),
        )

    def authorize(self, user: User, a: Attributes) -> None:
        """Raise the real server's 403 unless RBAC grants ``a`` to ``user``."""
        if not self.allows(user, a):
            raise statuses.ApiError(
                403,
                "Forbidden",
                forbidden_message(user, a),
                name=a.name or None,
                group=a.group,
                kind=a.qualified,
            )

    def impersonate(self, user: User, as_user: str | None, as_groups: list[str]) -> User:
        """``Impersonate-User``/``Impersonate-Group`` (``kubectl --as``): act as that user if
        ``user`` may impersonate it (verb ``impersonate`` on users, groups or the
        ServiceAccount), else 403."""
        if not as_user:
            if as_groups:
                raise statuses.bad_request("Impersonate-Group needs Impersonate-User")
            return user
        prefix = "system:serviceaccount:"
        if as_user.startswith(prefix) and as_user.count(":") == 3:
            ns, name = as_user[len(prefix) :].split(":")
            self.authorize(user, Attributes("impersonate", "", "serviceaccounts", "", ns, name))
            groups = as_groups or list(service_account_user(ns, name).groups)
        else:
            self.authorize(user, Attributes("impersonate", "", "users", name=as_user))
            groups = list(as_groups)
        for g in as_groups:
            self.authorize(user, Attributes("impersonate", "", "groups", name=g))
        if "system:authenticated" not in groups:
            groups.append("system:authenticated")
        return User(as_user, tuple(groups))

    def access_review(self, user: User, body: Any) -> dict[str, Any]:
        """``POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`` (``kubectl auth
        can-i``): may ``user`` do what the review's ``spec.resourceAttributes`` say?"""
        spec = body.get("spec") if isinstance(body, dict) else None
        attrs = (spec or {}).get("resourceAttributes")
        if not isinstance(attrs, dict):
            if isinstance((spec or {}).get("nonResourceAttributes"), dict):
                # Every user here is authenticated, and discovery is open to all of them.
                return _review(body, True, "non-resource URLs: discovery is open to every user")
            raise statuses.bad_request("spec.resourceAttributes is required")
        a = Attributes(
            verb=str(attrs.get("verb") or ""),
            group=str(attrs.get("group") or ""),
            resource=str(attrs.get("resource") or ""),
            subresource=str(attrs.get("subresource") or ""),
            namespace=str(attrs.get("namespace") or ""),
            name=str(attrs.get("name") or ""),
        )
        if not a.verb or not a.resource:
            raise statuses.bad_request("spec.resourceAttributes needs verb and resource")
        ok = self.allows(user, a)
        return _review(body, ok, "" if ok else forbidden_message(user, a))


def _review(body: Any, allowed_: bool, reason: str) -> dict[str, Any]:
    out = dict(body) if isinstance(body, dict) else {}
    out.setdefault("apiVersion", "authorization.k8s.io/v1")
    out.setdefault("kind", "SelfSubjectAccessReview")
    out["metadata"] = {"creationTimestamp": None}
    out["status"] = {"allowed": allowed_, **({"reason": reason} if reason else {})}
    return out
