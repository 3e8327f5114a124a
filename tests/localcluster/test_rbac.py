"""ServiceAccount tokens and RBAC (``--authorization-mode RBAC``): the rule evaluator alone,
then the real API server answering raw HTTP, kubectl and the operator's own rules."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pot.localcluster import authorizing as az
from pot.localcluster import launching

from .conftest import Cluster

SA = az.service_account_user("farm", "op")


def _role(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"rules": list(rules)}


def _allowed(
    a: az.Attributes,
    roles: dict[tuple[str, str, str], dict[str, Any]],
    cluster: list[dict[str, Any]] = (),  # type: ignore[assignment]
    namespaced: list[dict[str, Any]] = (),  # type: ignore[assignment]
    user: az.User = SA,
) -> bool:
    return az.allowed(
        user,
        a,
        cluster_bindings=cluster,
        namespace_bindings=namespaced,
        role=lambda kind, ns, name: roles.get((kind, ns, name)),
    )


def _crb(role: str, *subjects: dict[str, str]) -> dict[str, Any]:
    return {"roleRef": {"kind": "ClusterRole", "name": role}, "subjects": list(subjects)}


def _rb(ns: str, kind: str, role: str, *subjects: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"namespace": ns},
        "roleRef": {"kind": kind, "name": role},
        "subjects": list(subjects),
    }


OP = {"kind": "ServiceAccount", "name": "op", "namespace": "farm"}
READ_PODS = _role({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]})


# ---------------------------------------------------------------------- the evaluator


def test_verbs_follow_the_http_method_and_the_request_shape() -> None:
    assert az.verb("GET", named=True, watch=False) == "get"
    assert az.verb("GET", named=False, watch=False) == "list"
    assert az.verb("GET", named=False, watch=True) == "watch"
    assert az.verb("POST", named=False, watch=False) == "create"
    assert az.verb("PUT", named=True, watch=False) == "update"
    assert az.verb("PATCH", named=True, watch=False) == "patch"
    assert az.verb("DELETE", named=True, watch=False) == "delete"
    assert az.verb("DELETE", named=False, watch=False) == "deletecollection"
    assert az.verb("GET", named=True, watch=False, subresource="exec") == "create"


def test_a_cluster_role_binding_grants_everywhere_and_only_what_the_rules_say() -> None:
    roles = {("ClusterRole", "", "read-pods"): READ_PODS}
    crb = [_crb("read-pods", OP)]
    for ns in ("farm", "other", ""):
        assert _allowed(az.Attributes("list", "", "pods", namespace=ns), roles, crb)
    assert not _allowed(az.Attributes("delete", "", "pods", namespace="farm", name="p"), roles, crb)
    assert not _allowed(az.Attributes("list", "", "secrets", namespace="farm"), roles, crb)
    assert not _allowed(az.Attributes("list", "apps", "pods", namespace="farm"), roles, crb)
    # A subresource is its own resource: pods does not grant pods/log.
    assert not _allowed(
        az.Attributes("get", "", "pods", "log", namespace="farm", name="p"), roles, crb
    )
    # Nobody else is bound.
    other = az.service_account_user("farm", "someone-else")
    assert not _allowed(az.Attributes("list", "", "pods", namespace="farm"), roles, crb, user=other)


def test_a_role_binding_grants_only_in_its_namespace() -> None:
    roles = {("Role", "farm", "read-pods"): READ_PODS, ("ClusterRole", "", "read-all"): READ_PODS}
    # The subject's namespace defaults to the binding's.
    rbs = [_rb("farm", "Role", "read-pods", {"kind": "ServiceAccount", "name": "op"})]
    assert _allowed(az.Attributes("list", "", "pods", namespace="farm"), roles, namespaced=rbs)
    assert not _allowed(az.Attributes("list", "", "pods", namespace="other"), roles, namespaced=rbs)
    assert not _allowed(az.Attributes("list", "", "pods"), roles, namespaced=rbs)
    # A RoleBinding to a ClusterRole grants that role's rules in the binding's namespace only.
    rbs = [_rb("farm", "ClusterRole", "read-all", OP)]
    assert _allowed(az.Attributes("get", "", "pods", namespace="farm", name="x"), roles, [], rbs)
    assert not _allowed(az.Attributes("get", "", "pods", namespace="b", name="x"), roles, [], rbs)


def test_groups_users_wildcards_subresources_and_resource_names() -> None:
    roles = {
        ("ClusterRole", "", "any"): _role({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}),
        ("ClusterRole", "", "logs"): _role(
            {"apiGroups": [""], "resources": ["*/log"], "verbs": ["get"]}
        ),
        # Not a wildcard to real RBAC: "<resource>/*" names no subresource.
        ("ClusterRole", "", "pods-star"): _role(
            {"apiGroups": [""], "resources": ["pods/*"], "verbs": ["get"]}
        ),
        ("ClusterRole", "", "one-cm"): _role(
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "verbs": ["get", "patch"],
                "resourceNames": ["settings"],
            }
        ),
    }
    by_group = [_crb("any", {"kind": "Group", "name": "system:serviceaccounts:farm"})]
    assert _allowed(az.Attributes("delete", "apps", "deployments", namespace="x"), roles, by_group)
    by_user = [_crb("logs", {"kind": "User", "name": "system:serviceaccount:farm:op"})]
    assert _allowed(az.Attributes("get", "", "pods", "log", namespace="farm"), roles, by_user)
    assert not _allowed(az.Attributes("get", "", "pods", namespace="farm"), roles, by_user)
    assert not _allowed(az.Attributes("get", "", "pods", "exec", namespace="farm"), roles, by_user)
    star = [_crb("pods-star", {"kind": "User", "name": "system:serviceaccount:farm:op"})]
    assert not _allowed(az.Attributes("get", "", "pods", "log", namespace="farm"), roles, star)
    named = [_crb("one-cm", OP)]
    assert _allowed(
        az.Attributes("patch", "", "configmaps", namespace="farm", name="settings"), roles, named
    )
    assert not _allowed(
        az.Attributes("patch", "", "configmaps", namespace="farm", name="other"), roles, named
    )
    assert not _allowed(az.Attributes("list", "", "configmaps", namespace="farm"), roles, named)
    # A binding to a role that does not exist grants nothing; system:masters needs no binding.
    assert not _allowed(az.Attributes("list", "", "pods"), roles, [_crb("gone", OP)])
    assert _allowed(az.Attributes("delete", "", "nodes", name="n"), {}, user=az.ADMIN)


def test_forbidden_message_reads_like_the_real_servers() -> None:
    assert az.forbidden_message(SA, az.Attributes("list", "", "secrets", namespace="farm")) == (
        'secrets is forbidden: User "system:serviceaccount:farm:op" cannot list resource '
        '"secrets" in API group "" in the namespace "farm"'
    )
    assert az.forbidden_message(SA, az.Attributes("get", "", "nodes", name="n1")) == (
        'nodes "n1" is forbidden: User "system:serviceaccount:farm:op" cannot get resource '
        '"nodes" in API group "" at the cluster scope'
    )


def test_tokens_name_their_account_and_cannot_be_forged() -> None:
    tokens = az.Tokens(b"k" * 32)
    token = tokens.service_account("farm", "op")
    exists = {("farm", "op")}.__contains__

    def check(t: str) -> az.User | None:
        return tokens.authenticate(t, lambda ns, name: exists((ns, name)))

    assert check(token) == SA
    assert check(az.Tokens(b"x" * 32).service_account("farm", "op")) is None  # another key
    head, body, tag = token.split(".")
    forged_body = az.Tokens(b"k" * 32).service_account("farm", "admin").split(".")[1]
    assert check(f"{head}.{forged_body}.{tag}") is None  # another account, same tag
    assert check(f"{head}.{body}.{'0' * len(tag)}") is None
    assert check("garbage") is None and check("pot-sa.!!!.x") is None
    assert check(tokens.service_account("farm", "deleted")) is None  # account gone
    assert az.bearer("Bearer abc") == "abc" and az.bearer("Basic abc") is None
    with pytest.raises(ValueError, match="32 bytes"):
        az.Tokens(b"short")


# ---------------------------------------------------------------------- the API server


def _rbac_up(directory: Path, components: list[launching.Component] | None) -> Cluster:
    kubeconfig, _ = launching.up(directory, components=components, authorization="RBAC")
    url = launching.status(directory).url
    assert url is not None and url.startswith("https://")
    token = json.loads(kubeconfig.read_text())["users"][0]["user"]["token"]
    return Cluster(directory, kubeconfig, url, token=token)


@pytest.fixture(scope="module")
def rbac_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The API server alone, as `pot local up --authorization-mode RBAC` starts it (HTTPS)."""
    directory = tmp_path_factory.mktemp("rbac")
    try:
        yield _rbac_up(directory, components=[])
    finally:
        launching.down(directory)


def test_rbac_mode_serves_https_and_wants_a_token_everywhere_but_the_public_paths(
    rbac_cluster: Cluster,
) -> None:
    code, body = rbac_cluster.request("GET", "/api/v1/namespaces", headers={"Authorization": ""})
    assert code == 401 and body["reason"] == "Unauthorized"
    for path in ("/healthz", "/readyz", "/version"):
        assert rbac_cluster.request("GET", path, headers={"Authorization": ""})[0] == 200
    # kubectl and helm use the kubeconfig: the cluster CA and the admin token.
    assert "default" in rbac_cluster.kubectl("get", "namespaces").stdout
    assert rbac_cluster.helm("list", "-A").returncode == 0
    # Plain HTTP is not served.
    plain = Cluster(rbac_cluster.directory, rbac_cluster.kubeconfig, "http" + rbac_cluster.url[5:])
    with pytest.raises((OSError, http.client.HTTPException)):
        plain.request("GET", "/healthz")


def _token(cluster: Cluster, ns: str, name: str) -> str:
    code, body = cluster.request(
        "POST", f"/api/v1/namespaces/{ns}/serviceaccounts/{name}/token", {"spec": {}}
    )
    assert code == 201, body
    assert body["kind"] == "TokenRequest"
    token: str = body["status"]["token"]
    return token


def _as(cluster: Cluster, token: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return cluster.request(method, path, body, headers={"Authorization": f"Bearer {token}"})


MANIFEST = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader, namespace: default}
rules: [{apiGroups: [""], resources: ["pods"], verbs: ["get", "list", "watch"]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}
subjects: [{kind: ServiceAccount, name: reader}]
"""


def test_a_service_account_may_do_what_its_bindings_grant_and_nothing_else(
    rbac_cluster: Cluster,
) -> None:
    rbac_cluster.kubectl("apply", "-f", "-", input=MANIFEST)  # kubectl: no token, the admin
    token = _token(rbac_cluster, "default", "reader")
    assert _as(rbac_cluster, token, "GET", "/api/v1/namespaces/default/pods")[0] == 200
    code, _ = _as(
        rbac_cluster, token, "GET", "/api/v1/namespaces/default/pods?watch=1&timeoutSeconds=1"
    )
    assert code == 200
    for path in ("/api", "/apis", "/api/v1", "/apis/apps/v1", "/version"):
        assert _as(rbac_cluster, token, "GET", path)[0] == 200, path  # discovery stays open
    code, body = _as(rbac_cluster, token, "GET", "/api/v1/namespaces/default/secrets")
    assert code == 403 and body["reason"] == "Forbidden"
    assert body["message"] == (
        'secrets is forbidden: User "system:serviceaccount:default:reader" cannot list '
        'resource "secrets" in API group "" in the namespace "default"'
    )
    assert _as(rbac_cluster, token, "GET", "/api/v1/namespaces/kube-system/pods")[0] == 403
    assert _as(rbac_cluster, token, "GET", "/api/v1/pods")[0] == 403  # all namespaces
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}}
    code, body = _as(rbac_cluster, token, "POST", "/api/v1/namespaces/default/pods", pod)
    assert code == 403 and "cannot create resource" in body["message"]
    # Nor may it mint a token for a more powerful account.
    code, _ = _as(
        rbac_cluster, token, "POST", "/api/v1/namespaces/default/serviceaccounts/reader/token", {}
    )
    assert code == 403


def test_a_bad_or_revoked_token_gets_401(rbac_cluster: Cluster) -> None:
    rbac_cluster.kubectl("create", "serviceaccount", "short-lived")
    token = _token(rbac_cluster, "default", "short-lived")
    code, body = _as(rbac_cluster, token + "0", "GET", "/api/v1/namespaces/default/pods")
    assert code == 401 and body["reason"] == "Unauthorized"
    rbac_cluster.kubectl("delete", "serviceaccount", "short-lived")
    assert _as(rbac_cluster, token, "GET", "/api")[0] == 401
    code, body = rbac_cluster.request(
        "POST", "/api/v1/namespaces/default/serviceaccounts/nobody/token", {}
    )
    assert code == 404


LEASES = "/apis/coordination.k8s.io/v1/namespaces/{}/leases"


def _lease(ns: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"holderIdentity": "someone", "leaseDurationSeconds": 15},
    }


def test_the_operators_own_rules_let_it_work_and_nothing_more(
    rbac_cluster: Cluster, repo_root: Path
) -> None:
    """The ClusterRole and the leader-election Role the chart renders from
    pot.operator.rbac, bound as the chart binds them (release namespace "default"): what the
    operator does is allowed; other Leases, Secret changes and verbs no code uses are refused."""
    chart = repo_root / "charts" / "pot-operator"
    rendered = rbac_cluster.helm(
        "template",
        "pot",
        str(chart),
        "--namespace",
        "default",
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac.yaml",
    ).stdout
    rbac_cluster.kubectl("apply", "-f", "-", input=rendered)
    (sa,) = [
        d["metadata"]["name"]
        for d in _docs(rbac_cluster.kubectl("get", "sa", "-o", "json").stdout)
        if "operator" in d["metadata"]["name"]
    ]
    token = _token(rbac_cluster, "default", sa)
    for method, path in (
        ("GET", "/apis/pot.dev/v1alpha1/namespaces/default/trainingtasks"),
        ("GET", "/apis/pot.dev/v1alpha1/validatorsets?watch=true&timeoutSeconds=1"),
        ("GET", "/api/v1/namespaces/default/secrets"),
        ("GET", "/api/v1/namespaces/default/secrets/keys"),
        ("GET", "/api/v1/nodes"),
        ("GET", "/api/v1/namespaces/default/pods?watch=true&timeoutSeconds=1"),
        ("DELETE", "/api/v1/namespaces/default/pods/gone"),
        ("PATCH", "/apis/apps/v1/namespaces/default/statefulsets/gone"),
    ):
        code, body = _as(rbac_cluster, token, method, path, {} if method == "PATCH" else None)
        assert code != 403, (method, path, body)  # allowed (then 404: no such object or CRD)
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": "t.", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
        "reason": "Test",
        "message": "m",
    }
    code, body = _as(rbac_cluster, token, "POST", "/api/v1/namespaces/default/events", event)
    assert code == 201, body

    # Its own Lease, in its own namespace: created, read and renewed (operator/leadership.py).
    own = LEASES.format("default")
    code, body = _as(rbac_cluster, token, "POST", own, _lease("default", "pot-operator"))
    assert code == 201, body
    code, lease = _as(rbac_cluster, token, "GET", f"{own}/pot-operator")
    assert code == 200, lease
    lease["spec"]["holderIdentity"] = "pot-operator-0"
    code, body = _as(rbac_cluster, token, "PUT", f"{own}/pot-operator", lease)
    assert code == 200, body
    # No other Lease: not another in its namespace, and never the control plane's.
    rbac_cluster.kubectl("create", "namespace", "kube-system", check=False)
    for ns, name in (("kube-system", "kube-scheduler"), ("default", "someone-elses")):
        code, body = rbac_cluster.request("POST", LEASES.format(ns), _lease(ns, name))
        assert code == 201, body  # as the admin
        code, theirs = rbac_cluster.request("GET", f"{LEASES.format(ns)}/{name}")
        theirs["spec"]["holderIdentity"] = "the-operator"
        for method, body in (("GET", None), ("PUT", theirs), ("DELETE", None)):
            code, refused = _as(rbac_cluster, token, method, f"{LEASES.format(ns)}/{name}", body)
            assert code == 403, (method, ns, name, refused)
    code, _ = _as(rbac_cluster, token, "POST", LEASES.format("kube-system"), _lease("x", "x"))
    assert code == 403
    assert _as(rbac_cluster, token, "GET", "/apis/coordination.k8s.io/v1/leases")[0] == 403

    # A Secret is only created (a set's accepted keys, immutable), never changed or deleted;
    # nodes and RBAC are not the operator's to change or read.
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {}}
    code, body = _as(rbac_cluster, token, "POST", "/api/v1/namespaces/default/secrets", secret)
    assert code == 201, body
    for method, body in (("PATCH", {"data": {}}), ("PUT", secret), ("DELETE", None)):
        code, refused = _as(
            rbac_cluster, token, method, "/api/v1/namespaces/default/secrets/s", body
        )
        assert code == 403, (method, refused)
    code, _ = _as(rbac_cluster, token, "DELETE", "/api/v1/nodes/n1")
    assert code == 403
    code, _ = _as(rbac_cluster, token, "GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles")
    assert code == 403
    # Verbs no code uses: children go by garbage collection, nothing lists or watches them.
    for method, path in (
        ("DELETE", "/api/v1/namespaces/default/configmaps/c"),
        ("GET", "/api/v1/namespaces/default/configmaps"),
        ("DELETE", "/api/v1/namespaces/default/services/s"),
        ("GET", "/api/v1/namespaces/default/services?watch=true&timeoutSeconds=1"),
        ("DELETE", "/api/v1/namespaces/default/serviceaccounts/a"),
        ("DELETE", "/api/v1/namespaces/default/persistentvolumeclaims/p"),
        ("GET", "/api/v1/namespaces/default/persistentvolumeclaims"),
        ("DELETE", "/apis/apps/v1/namespaces/default/statefulsets/s"),
        ("GET", "/apis/apps/v1/statefulsets"),
        ("DELETE", "/apis/policy/v1/namespaces/default/poddisruptionbudgets/p"),
        ("PATCH", "/api/v1/namespaces/default/events/e"),
        ("POST", "/apis/events.k8s.io/v1/namespaces/default/events"),
    ):
        code, body = _as(rbac_cluster, token, method, path, {} if method != "GET" else None)
        assert code == 403, (method, path, body)


def _docs(text: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(text)["items"]
    return items


def test_always_allow_still_refuses_tokens_it_did_not_mint(apiserver_cluster: Cluster) -> None:
    apiserver_cluster.kubectl("create", "serviceaccount", "anyone")
    token = _token(apiserver_cluster, "default", "anyone")
    assert _as(apiserver_cluster, token, "GET", "/api/v1/namespaces/default/secrets")[0] == 200
    assert _as(apiserver_cluster, "forged", "GET", "/api/v1/namespaces/default/secrets")[0] == 401


def test_an_unknown_mode_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="--authorization-mode: 'ABAC' is not one of"):
        launching.up(tmp_path, authorization="ABAC")


PROBE = r"""
import base64, json, os, ssl, urllib.request, urllib.error
cfg = json.load(open(os.environ["KUBECONFIG"]))
cluster, user = cfg["clusters"][0]["cluster"], cfg["users"][0]["user"]
ctx = ssl.create_default_context(
    cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
)
def code(path):
    req = urllib.request.Request(
        cluster["server"] + path, headers={"Authorization": "Bearer " + user["token"]}
    )
    try:
        return urllib.request.urlopen(req, timeout=10, context=ctx).status
    except urllib.error.HTTPError as e:
        return e.code
print(cluster["server"].split(":")[0], code("/api/v1/namespaces/default/configmaps/settings"),
      code("/api/v1/namespaces/default/secrets"))
"""


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:subprocess .* is still running:ResourceWarning")
def test_a_pod_acts_as_its_service_account(tmp_path: Path) -> None:
    """The kubelet mints the pod's token and mounts it: RBAC then holds the pod to its Role."""
    cluster = _rbac_up(tmp_path, components=None)
    try:
        cluster.kubectl(
            "apply",
            "-f",
            "-",
            input=MANIFEST.replace("pods", "configmaps").replace("pod-reader", "cm-reader")
            + "\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {a: b}\n",
        )
        job = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "probe"},
            "spec": {
                "template": {
                    "spec": {
                        "serviceAccountName": "reader",
                        "restartPolicy": "Never",
                        "containers": [
                            {"name": "c", "image": "python", "command": ["python", "-c", PROBE]}
                        ],
                    }
                }
            },
        }
        cluster.kubectl("apply", "-f", "-", input=json.dumps(job))
        cluster.kubectl(
            "wait", "--for=condition=Complete", "job/probe", "--timeout=60s", timeout=90
        )
        assert cluster.kubectl("logs", "job/probe").stdout.split() == ["https", "200", "403"]
    finally:
        launching.down(tmp_path)


def test_certificates_are_issued_once_per_address_set_under_one_ca(tmp_path: Path) -> None:
    from cryptography import x509

    from pot.localcluster import pki

    crt, key = pki.issue(tmp_path, "apiserver", ips=["127.0.0.1"], dns=["localhost"])
    assert (key.stat().st_mode & 0o777) == 0o600
    assert (tmp_path / "pki" / "ca.key").stat().st_mode & 0o777 == 0o600
    again, _ = pki.issue(tmp_path, "apiserver", ips=["127.0.0.1"], dns=["localhost"])
    assert again.read_bytes() == crt.read_bytes()  # same addresses: kept
    moved, _ = pki.issue(tmp_path, "apiserver", ips=["10.200.0.1"], dns=[])
    cert = x509.load_pem_x509_certificate(moved.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.200.0.1"]
    ca = x509.load_pem_x509_certificate((tmp_path / "pki" / "ca.crt").read_bytes())
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)


def test_kubectl_auth_can_i_and_as_answer_for_a_service_account(rbac_cluster: Cluster) -> None:
    """`kubectl auth can-i` (SelfSubjectAccessReview, sent as protobuf) and `--as`
    (impersonation, which only someone allowed to impersonate may use)."""
    rbac_cluster.kubectl("apply", "-f", "-", input=MANIFEST)
    reader = "--as=system:serviceaccount:default:reader"

    def can_i(*args: str) -> tuple[int, str]:
        proc = rbac_cluster.kubectl("auth", "can-i", *args, check=False)
        return proc.returncode, proc.stdout.strip()

    assert can_i("delete", "nodes") == (0, "yes")  # the admin
    assert can_i("list", "pods", reader) == (0, "yes")
    code, out = can_i("list", "secrets", reader)
    assert code == 1 and out.startswith("no - secrets is forbidden")
    assert can_i("list", "pods", "-n", "kube-system", reader)[0] == 1
    assert can_i("get", "pods", "--subresource=log", reader)[0] == 1
    assert "No resources found" in rbac_cluster.kubectl("get", "pods", reader).stderr
    denied = rbac_cluster.kubectl("get", "secrets", reader, check=False)
    assert denied.returncode == 1 and "Forbidden" in denied.stderr
    # A ServiceAccount may not impersonate anyone it is not granted.
    token = _token(rbac_cluster, "default", "reader")
    code, body = rbac_cluster.request(
        "GET",
        "/api/v1/namespaces/default/secrets",
        headers={"Authorization": f"Bearer {token}", "Impersonate-User": "pot-admin"},
    )
    assert code == 403 and 'cannot impersonate resource "users"' in body["message"]
