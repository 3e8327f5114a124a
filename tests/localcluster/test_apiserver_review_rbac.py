"""RBAC privilege-escalation prevention in ``--authorization-mode RBAC`` (:mod:`escalation`):
a ServiceAccount allowed to write Roles and RoleBindings may grant only what it holds, or
what it may ``escalate``/``bind``, as on a real cluster; the admin may grant anything."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.localcluster.conftest import Cluster, start_threaded

RBAC = "/apis/rbac.authorization.k8s.io/v1"
TEAM = f"{RBAC}/namespaces/team"


def _rule(resources: list[str], verbs: list[str], group: str = "", **kw: Any) -> dict[str, Any]:
    return {"apiGroups": [group], "resources": resources, "verbs": verbs, **kw}


def _binding(name: str, kind: str, role: str, sa: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": "team"}],
    }


@pytest.fixture(scope="module")
def rbac(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Any, Any]]:
    srv, c = start_threaded(tmp_path_factory.mktemp("escalation"), authorization="RBAC")
    assert srv.server is not None
    tokens = srv.server.gate.tokens
    admin = {"Authorization": f"Bearer {tokens.admin()}"}

    def as_admin(method: str, path: str, body: Any = None) -> Any:
        code, out = c.request(method, path, body, headers=admin)
        assert code < 300, (code, out)
        return out

    def as_deployer(method: str, path: str, body: Any = None) -> tuple[int, Any]:
        sa = {"Authorization": f"Bearer {tokens.service_account('team', 'deployer')}"}
        return c.request(method, path, body, headers=sa)

    as_admin("POST", "/api/v1/namespaces", {"metadata": {"name": "team"}})
    for sa in ("deployer", "app"):
        as_admin("POST", "/api/v1/namespaces/team/serviceaccounts", {"metadata": {"name": sa}})
    wild = {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}
    as_admin(
        "POST", f"{RBAC}/clusterroles", {"metadata": {"name": "cluster-admin"}, "rules": [wild]}
    )
    view = [_rule(["configmaps", "pods"], ["get", "list", "watch"])]
    as_admin("POST", f"{RBAC}/clusterroles", {"metadata": {"name": "view"}, "rules": view})
    rbac_writes = ["create", "get", "update", "patch"]
    rules = [
        _rule(["roles", "rolebindings"], rbac_writes, "rbac.authorization.k8s.io"),
        _rule(["configmaps"], ["get", "list"]),
    ]
    as_admin("POST", f"{TEAM}/roles", {"metadata": {"name": "deployer"}, "rules": rules})
    as_admin("POST", f"{TEAM}/rolebindings", _binding("deployer", "Role", "deployer", "deployer"))
    try:
        yield c, as_admin, as_deployer
    finally:
        srv.stop()


def test_binding_a_more_powerful_role_is_refused(rbac: tuple[Cluster, Any, Any]) -> None:
    _, _, as_deployer = rbac
    code, out = as_deployer(
        "POST", f"{TEAM}/rolebindings", _binding("grab", "ClusterRole", "cluster-admin", "deployer")
    )
    assert code == 403 and out["reason"] == "Forbidden", out
    assert 'user "system:serviceaccount:team:deployer"' in out["message"]
    assert "is attempting to grant RBAC permissions not currently held" in out["message"]


def test_writing_a_role_beyond_what_one_holds_is_refused(rbac: tuple[Cluster, Any, Any]) -> None:
    _, _, as_deployer = rbac
    wild = {"metadata": {"name": "all"}, "rules": [_rule(["*"], ["*"], "*")]}
    code, out = as_deployer("POST", f"{TEAM}/roles", wild)
    assert code == 403 and "not currently held" in out["message"], out
    secrets = {"metadata": {"name": "secrets"}, "rules": [_rule(["secrets"], ["get"])]}
    code, out = as_deployer("POST", f"{TEAM}/roles", secrets)
    assert code == 403 and 'Resources:["secrets"]' in out["message"], out


def test_granting_what_one_holds_or_may_bind_works(rbac: tuple[Cluster, Any, Any]) -> None:
    _, as_admin, as_deployer = rbac
    reader = {"metadata": {"name": "reader"}, "rules": [_rule(["configmaps"], ["get"])]}
    code, out = as_deployer("POST", f"{TEAM}/roles", reader)
    assert code == 201, out
    code, out = as_deployer(
        "POST", f"{TEAM}/rolebindings", _binding("app", "Role", "reader", "app")
    )
    assert code == 201, out
    # Not holding "view", but allowed to bind it by name.
    code, _ = as_deployer(
        "POST", f"{TEAM}/rolebindings", _binding("v", "ClusterRole", "view", "app")
    )
    assert code == 403
    bind = _rule(["clusterroles"], ["bind"], "rbac.authorization.k8s.io", resourceNames=["view"])
    as_admin("POST", f"{TEAM}/roles", {"metadata": {"name": "bind-view"}, "rules": [bind]})
    as_admin("POST", f"{TEAM}/rolebindings", _binding("bind-view", "Role", "bind-view", "deployer"))
    code, out = as_deployer(
        "POST", f"{TEAM}/rolebindings", _binding("v", "ClusterRole", "view", "app")
    )
    assert code == 201, out
    # The admin (system:masters) grants anything.
    as_admin(
        "POST", f"{TEAM}/rolebindings", _binding("root", "ClusterRole", "cluster-admin", "app")
    )


def test_always_allow_mode_does_not_check(tmp_path: Path) -> None:
    srv, c = start_threaded(tmp_path)
    try:
        body = {"metadata": {"name": "all"}, "rules": [_rule(["*"], ["*"], "*")]}
        assert c.request("POST", f"{RBAC}/clusterroles", body)[0] == 201
    finally:
        srv.stop()
