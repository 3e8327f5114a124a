"""RBAC privilege-escalation prevention, as the real API server's RBAC storage does it.

Without it, anyone allowed to create RoleBindings (or Roles) could grant
themselves anything: bind ``cluster-admin`` in their namespace, or write a
Role with ``*`` and bind it. The real server refuses (Kubernetes docs, "Using
RBAC Authorization", "Privilege escalation prevention and bootstrapping"):

* a Role or ClusterRole may be created or updated only by someone who holds
  every permission it grants (in its namespace, or cluster-wide for a
  ClusterRole), or who may ``escalate`` on roles/clusterroles;
* a RoleBinding or ClusterRoleBinding only by someone who holds every
  permission of the role it references, or who may ``bind`` that role.

``system:masters`` (the admin token) is exempt, and so is everything outside
RBAC mode. Checked against the rules' resources; ``nonResourceURLs`` are not
(discovery is open to every user here).
"""

from __future__ import annotations

import contextvars
import itertools
from typing import Any

from pot.localcluster import authorizing, statuses
from pot.localcluster.resources import ResourceType

CURRENT_USER: contextvars.ContextVar[authorizing.User | None] = contextvars.ContextVar(
    "pot_apiserver_user", default=None
)
"""Who makes the request being served (set by the API server per request)."""

_ROLES = ("roles", "clusterroles")
_BINDINGS = ("rolebindings", "clusterrolebindings")


def _atoms(rule: Any) -> list[authorizing.Attributes]:
    """One (verb, group, resource, subresource, name) per combination a rule grants."""
    if not isinstance(rule, dict):
        return []
    out = []
    names = rule.get("resourceNames") or [""]
    for verb, group, resource, name in itertools.product(
        rule.get("verbs") or (), rule.get("apiGroups") or (), rule.get("resources") or (), names
    ):
        res, _, sub = str(resource).partition("/")
        out.append(authorizing.Attributes(str(verb), str(group), res, sub, "", str(name)))
    return out


def _describe(a: authorizing.Attributes) -> str:
    names = f', ResourceNames:["{a.name}"]' if a.name else ""
    return f'{{APIGroups:["{a.group}"], Resources:["{a.qualified}"]{names}, Verbs:["{a.verb}"]}}'


class Guard:
    """An admission hook of :class:`handling.Cluster` for the RBAC group's writes."""

    def __init__(self, gate: authorizing.Gate) -> None:
        self.gate = gate

    def _missing(
        self, user: authorizing.User, rules: Any, namespace: str
    ) -> list[authorizing.Attributes]:
        missing = []
        for rule in rules if isinstance(rules, list) else ():
            for a in _atoms(rule):
                held = authorizing.Attributes(
                    a.verb, a.group, a.resource, a.subresource, namespace, a.name
                )
                if not self.gate.allows(user, held):
                    missing.append(a)
        return missing

    def __call__(self, t: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        if not self.gate.rbac or t.group != authorizing.RBAC_GROUP:
            return
        if t.resource not in _ROLES + _BINDINGS:
            return
        user = CURRENT_USER.get()
        if user is None or authorizing.MASTERS in user.groups:
            return
        meta = obj.get("metadata") or {}
        ns = str(meta.get("namespace") or "") if t.namespaced else ""
        name = str(meta.get("name") or "")
        if t.resource in _ROLES:
            escalate = authorizing.Attributes("escalate", t.group, t.resource, "", ns, name)
            if self.gate.allows(user, escalate):
                return
            missing = self._missing(user, obj.get("rules"), ns)
        else:
            raw = obj.get("roleRef")
            ref: dict[str, Any] = raw if isinstance(raw, dict) else {}
            kind, role_name = str(ref.get("kind") or ""), str(ref.get("name") or "")
            plural = "roles" if kind == "Role" else "clusterroles"
            bind = authorizing.Attributes("bind", t.group, plural, "", ns, role_name)
            if self.gate.allows(user, bind):
                return
            role = self.gate.store.get((t.group, plural, ns if kind == "Role" else "", role_name))
            if role is None:
                raise self._refuse(t, name, user, f'{kind.lower()} "{role_name}" not found')
            missing = self._missing(user, role.get("rules"), ns)
        if missing:
            held = "\n".join(_describe(a) for a in missing[:10])
            raise self._refuse(
                t,
                name,
                user,
                f"is attempting to grant RBAC permissions not currently held:\n{held}",
            )

    @staticmethod
    def _refuse(t: ResourceType, name: str, user: authorizing.User, why: str) -> statuses.ApiError:
        groups = " ".join(f'"{g}"' for g in user.groups)
        return statuses.ApiError(
            403,
            "Forbidden",
            f'{t.resource}.{t.group} "{name}" is forbidden: user "{user.name}" '
            f"(groups=[{groups}]) {why}",
            name=name,
            group=t.group,
            kind=t.resource,
        )
