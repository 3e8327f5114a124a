"""Pure reconcilers: StatefulSet order/recreate/rolling update, ReplicaSet, Deployment, Job, Endpoints."""

from __future__ import annotations

from typing import Any

from pot.localcluster import controllers, controllers_endpoints, controllers_sts
from pot.localcluster.controllers import Create, Delete, Patch


def _sts(replicas: int = 3, image: str = "a", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "vset", "namespace": "ns", "uid": "sts-uid", "generation": 1},
        "spec": {
            "replicas": replicas,
            "serviceName": "vset-peers",
            "selector": {"matchLabels": {"app": "v"}},
            "template": {
                "metadata": {"labels": {"app": "v"}},
                "spec": {"containers": [{"name": "c", "image": image}]},
            },
            **spec,
        },
    }


def _as_pod(body: dict[str, Any], *, ready: bool = True, phase: str = "Running") -> dict[str, Any]:
    pod = {
        **body,
        "metadata": {
            **body["metadata"],
            "namespace": "ns",
            "uid": body["metadata"]["name"] + "-uid",
        },
    }
    pod["status"] = {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    return pod


def _created(plan: controllers.Plan) -> list[dict[str, Any]]:
    return [a.body for a in plan.actions if isinstance(a, Create) and a.resource == "pods"]


def test_statefulset_starts_in_order_with_stable_names_and_dns_fields() -> None:
    sts = _sts()
    plan = controllers_sts.statefulset(sts, [], {})
    first = _created(plan)
    assert [p["metadata"]["name"] for p in first] == ["vset-0"]
    assert (
        first[0]["spec"]["hostname"] == "vset-0" and first[0]["spec"]["subdomain"] == "vset-peers"
    )
    # vset-0 exists but is not ready: nothing more.
    assert _created(controllers_sts.statefulset(sts, [_as_pod(first[0], ready=False)], {})) == []
    pods = [_as_pod(first[0])]
    second = _created(controllers_sts.statefulset(sts, pods, {}))
    assert [p["metadata"]["name"] for p in second] == ["vset-1"]


def test_statefulset_recreates_a_deleted_member_under_the_same_name() -> None:
    sts = _sts()
    pods = [
        _as_pod(controllers_sts.pod_for(sts, i, controllers.template_hash(sts["spec"]["template"])))
        for i in (0, 1, 3)
    ]
    names = [
        p["metadata"]["name"] for p in _created(controllers_sts.statefulset(_sts(4), pods, {}))
    ]
    assert names == ["vset-2"]


def test_statefulset_scales_down_from_the_highest_ordinal() -> None:
    rev = controllers.template_hash(_sts()["spec"]["template"])
    pods = [_as_pod(controllers_sts.pod_for(_sts(), i, rev)) for i in range(3)]
    plan = controllers_sts.statefulset(_sts(1), pods, {})
    assert [a.name for a in plan.actions if isinstance(a, Delete)] == ["vset-2"]


def test_statefulset_rolling_update_replaces_highest_outdated_first() -> None:
    old = _sts(image="a")
    rev = controllers.template_hash(old["spec"]["template"])
    pods = [_as_pod(controllers_sts.pod_for(old, i, rev)) for i in range(3)]
    plan = controllers_sts.statefulset(_sts(image="b"), pods, {})
    assert [a.name for a in plan.actions if isinstance(a, Delete)] == ["vset-2"]
    assert plan.status is not None and plan.status["updatedReplicas"] == 0


def test_statefulset_claims_per_ordinal() -> None:
    sts = _sts(
        1,
        volumeClaimTemplates=[
            {"metadata": {"name": "data"}, "spec": {"resources": {"requests": {"storage": "1Gi"}}}}
        ],
    )
    plan = controllers_sts.statefulset(sts, [], {})
    pvcs = [
        a.body["metadata"]["name"]
        for a in plan.actions
        if isinstance(a, Create) and a.resource == "persistentvolumeclaims"
    ]
    assert pvcs == ["data-vset-0"]
    vols = _created(plan)[0]["spec"]["volumes"]
    assert vols == [{"name": "data", "persistentVolumeClaim": {"claimName": "data-vset-0"}}]


def _rs(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "web-abc", "namespace": "ns", "uid": "rs-uid"},
        "spec": {
            "replicas": replicas,
            "template": {"metadata": {"labels": {"app": "w"}}, "spec": {"containers": []}},
        },
    }


def test_replicaset_scales_both_ways() -> None:
    plan = controllers.replicaset(_rs(3), [])
    bodies = _created(plan)
    assert len(bodies) == 3 and all(b["metadata"]["name"].startswith("web-abc-") for b in bodies)
    pods = [_as_pod(b) for b in bodies]
    pods[1]["status"]["conditions"][0]["status"] = "False"
    plan = controllers.replicaset(_rs(2), pods)
    assert [a.name for a in plan.actions if isinstance(a, Delete)] == [pods[1]["metadata"]["name"]]


def test_deployment_creates_a_replicaset_then_rolls() -> None:
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "ns", "uid": "dep-uid"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "w"}},
            "template": {
                "metadata": {"labels": {"app": "w"}},
                "spec": {"containers": [{"name": "c", "image": "v1"}]},
            },
        },
    }
    plan = controllers.deployment(dep, [], [])
    rs = next(a.body for a in plan.actions if isinstance(a, Create))
    assert rs["spec"]["replicas"] == 2 and rs["metadata"]["labels"]["pod-template-hash"]
    rs_obj = {**rs, "metadata": {**rs["metadata"], "namespace": "ns", "uid": "rs1"}}
    dep["spec"]["template"]["spec"]["containers"][0]["image"] = "v2"
    plan = controllers.deployment(dep, [rs_obj], [])
    assert any(isinstance(a, Create) for a in plan.actions)
    assert not any(isinstance(a, Patch) and a.patch["spec"]["replicas"] == 0 for a in plan.actions)


def test_job_completes_and_fails_after_backoff_limit() -> None:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "j", "namespace": "ns", "uid": "job-uid"},
        "spec": {
            "completions": 1,
            "parallelism": 1,
            "backoffLimit": 1,
            "template": {"spec": {"restartPolicy": "Never", "containers": []}},
        },
    }
    body = _created(controllers.job(job, [], now="t"))[0]
    assert body["metadata"]["labels"]["job-name"] == "j"
    done = controllers.job(job, [_as_pod(body, phase="Succeeded")], now="t")
    assert done.status is not None and {c["type"] for c in done.status["conditions"]} >= {
        "Complete"
    }
    failed = [
        _as_pod({**body, "metadata": {**body["metadata"], "name": f"j-{i}"}}, phase="Failed")
        for i in range(2)
    ]
    plan = controllers.job(job, failed, now="t")
    assert plan.status is not None
    assert any(
        c["type"] == "Failed" and c["reason"] == "BackoffLimitExceeded"
        for c in plan.status["conditions"]
    )


def test_endpoints_split_ready_and_carry_hostnames() -> None:
    svc = {
        "metadata": {"name": "vset-peers", "namespace": "ns"},
        "spec": {
            "clusterIP": "None",
            "selector": {"app": "v"},
            "ports": [{"name": "http", "port": 8080}],
        },
    }
    rev = "r"
    pods = []
    for i, ready in enumerate([True, False]):
        pod = _as_pod(controllers_sts.pod_for(_sts(), i, rev), ready=ready)
        pod["status"]["podIP"] = f"10.0.0.{i + 2}"
        pods.append(pod)
    ep, eps = controllers_endpoints.endpoints(svc, pods) or ({}, {})
    subset = ep["subsets"][0]
    assert [a["hostname"] for a in subset["addresses"]] == ["vset-0"]
    assert [a["ip"] for a in subset["notReadyAddresses"]] == ["10.0.0.3"]
    assert eps["metadata"]["labels"]["kubernetes.io/service-name"] == "vset-peers"
    svc["spec"]["publishNotReadyAddresses"] = True
    ep, _ = controllers_endpoints.endpoints(svc, pods) or ({}, {})
    assert len(ep["subsets"][0]["addresses"]) == 2
