"""pot.operator.rbac under the local cluster's RBAC evaluator, bound as the chart binds it:
the ClusterRole cluster-wide, the leader-election Role in the release namespace. Every API
call the operator makes is allowed; other Leases and verbs no code uses are refused.
(tests/localcluster/test_rbac.py checks the rendered chart against the real API server.)"""

from __future__ import annotations

from typing import Any

import pytest

from pot.localcluster import authorizing as az
from pot.operator import config as configuration
from pot.operator import rbac

NS = "pot-system"
ACCOUNT = {"kind": "ServiceAccount", "name": "pot-pot-operator", "namespace": NS}
OPERATOR = az.service_account_user(NS, "pot-pot-operator")
ROLES: dict[tuple[str, str, str], dict[str, Any]] = {
    ("ClusterRole", "", "op"): {"rules": [dict(r) for r in rbac.OPERATOR_RULES]},
    ("Role", NS, "leases"): {"rules": [dict(r) for r in rbac.LEASE_RULES]},
}
CLUSTER_BINDINGS = [{"roleRef": {"kind": "ClusterRole", "name": "op"}, "subjects": [ACCOUNT]}]
ROLE_BINDINGS = [
    {
        "metadata": {"namespace": NS},
        "roleRef": {"kind": "Role", "name": "leases"},
        "subjects": [ACCOUNT],
    }
]


def allowed(verb: str, group: str, resource: str, ns: str = "farm", name: str = "") -> bool:
    sub = ""
    if "/" in resource:
        resource, sub = resource.split("/")
    return az.allowed(
        OPERATOR,
        az.Attributes(verb, group, resource, sub, ns, name),
        cluster_bindings=CLUSTER_BINDINGS,
        namespace_bindings=ROLE_BINDINGS,
        role=lambda kind, ns_, name_: ROLES.get((kind, ns_, name_)),
    )


# What the code does: kopf's watches and the startup listing (handlers), the reconcilers'
# creates, patches and deletes, status writes and Events (posting), leader election.
USED = [
    ("list", "pot.dev", "trainingtasks"),
    ("watch", "pot.dev", "validatorsets"),
    ("patch", "pot.dev", "trainingtasks/status"),
    ("patch", "pot.dev", "validatorsets/status"),
    ("list", "", "pods"),
    ("watch", "", "pods"),
    ("create", "", "pods"),
    ("patch", "", "pods"),
    ("delete", "", "pods"),
    ("create", "", "services"),
    ("get", "", "services"),
    ("patch", "", "services"),
    ("create", "", "configmaps"),
    ("get", "", "configmaps"),
    ("patch", "", "configmaps"),
    ("create", "", "serviceaccounts"),
    ("get", "", "serviceaccounts"),
    ("patch", "", "serviceaccounts"),
    ("create", "", "persistentvolumeclaims"),
    ("create", "", "secrets"),
    ("get", "", "secrets"),
    ("list", "", "secrets"),
    ("watch", "", "secrets"),
    ("create", "", "events"),
    ("create", "apps", "statefulsets"),
    ("get", "apps", "statefulsets"),
    ("patch", "apps", "statefulsets"),
    ("create", "policy", "poddisruptionbudgets"),
    ("get", "policy", "poddisruptionbudgets"),
    ("patch", "policy", "poddisruptionbudgets"),
    ("create", "scheduling.volcano.sh", "podgroups"),
    ("delete", "scheduling.volcano.sh", "podgroups"),
]

UNUSED = [
    ("patch", "pot.dev", "trainingtasks"),
    ("delete", "pot.dev", "validatorsets"),
    ("update", "pot.dev", "trainingtasks/status"),
    ("patch", "", "secrets"),
    ("update", "", "secrets"),
    ("delete", "", "secrets"),
    ("delete", "", "configmaps"),
    ("list", "", "configmaps"),
    ("watch", "", "services"),
    ("delete", "", "services"),
    ("delete", "", "serviceaccounts"),
    ("delete", "", "persistentvolumeclaims"),
    ("patch", "", "persistentvolumeclaims"),
    ("list", "apps", "statefulsets"),
    ("delete", "apps", "statefulsets"),
    ("update", "apps", "statefulsets"),
    ("delete", "policy", "poddisruptionbudgets"),
    ("patch", "", "events"),
    ("create", "events.k8s.io", "events"),
    ("create", "", "pods/exec"),
    ("deletecollection", "", "pods"),
]


@pytest.mark.parametrize(("verb", "group", "resource"), USED)
def test_every_call_the_operator_makes_is_allowed(verb: str, group: str, resource: str) -> None:
    assert allowed(verb, group, resource, name="" if verb in ("create", "list", "watch") else "x")


@pytest.mark.parametrize(("verb", "group", "resource"), UNUSED)
def test_verbs_no_code_uses_are_refused(verb: str, group: str, resource: str) -> None:
    assert not allowed(verb, group, resource, name="x")


def test_cluster_scoped_reads_are_list_and_watch_only() -> None:
    for resource, group in (
        ("nodes", ""),
        ("namespaces", ""),
        ("customresourcedefinitions", "apiextensions.k8s.io"),
    ):
        assert allowed("list", group, resource, ns="") and allowed("watch", group, resource, ns="")
        assert not allowed("patch", group, resource, ns="", name="x")
        assert not allowed("delete", group, resource, ns="", name="x")


def test_the_operator_renews_its_own_lease_and_no_other() -> None:
    lease = configuration.from_env({}).lease_name
    assert lease == rbac.LEASE_NAME, "the Role must name the Lease the operator takes"
    assert allowed("create", "coordination.k8s.io", "leases", ns=NS)
    assert allowed("get", "coordination.k8s.io", "leases", ns=NS, name=lease)
    assert allowed("update", "coordination.k8s.io", "leases", ns=NS, name=lease)
    assert not allowed("delete", "coordination.k8s.io", "leases", ns=NS, name=lease)
    assert not allowed("update", "coordination.k8s.io", "leases", ns=NS, name="other")
    assert not allowed("list", "coordination.k8s.io", "leases", ns=NS)
    # Never the control plane's leader leases nor the nodes' heartbeats.
    for ns, name in (
        ("kube-system", "kube-scheduler"),
        ("kube-system", "kube-controller-manager"),
        ("kube-node-lease", "node-1"),
        ("farm", lease),
    ):
        assert not allowed("get", "coordination.k8s.io", "leases", ns=ns, name=name)
        assert not allowed("update", "coordination.k8s.io", "leases", ns=ns, name=name)
    assert not allowed("create", "coordination.k8s.io", "leases", ns="kube-system")
