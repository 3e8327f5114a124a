"""Pure logic: quantities, conditions, checks, gang fit, ValidatorSet status, config, RBAC."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from pot import errors, quantities
from pot.operator import checks, conditions, gang, rbac, vsets
from pot.operator import config as configuration

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def test_quantities() -> None:
    assert quantities.amount("cpu", "500m") == 500
    assert quantities.amount("cpu", "2") == 2000
    assert quantities.amount("memory", "1Gi") == 2**30
    assert quantities.amount("memory", "1k") == 1000
    assert quantities.render("memory", 32 * 2**30) == "32Gi"
    assert quantities.render("cpu", 1500) == "1500m"
    with pytest.raises(errors.ConfigError, match="not a resource quantity"):
        quantities.parse("lots")


def test_conditions_move_time_only_when_status_changes() -> None:
    later = T0 + datetime.timedelta(minutes=5)
    conds = conditions.put(
        None, "GangScheduled", "False", "InsufficientCapacity", "a", generation=1, now=T0
    )
    conds = conditions.put(
        conds, "GangScheduled", "False", "InsufficientCapacity", "b", generation=2, now=later
    )
    (cond,) = conds
    assert cond["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert cond["message"] == "b" and cond["observedGeneration"] == 2
    conds = conditions.put(
        conds, "GangScheduled", "True", "Scheduled", "c", generation=2, now=later
    )
    assert conds[0]["lastTransitionTime"] == "2026-01-01T00:05:00Z"
    conds = conditions.put(conds, "Training", "True", "GangRunning", "d", generation=2, now=later)
    assert [c["type"] for c in conds] == ["GangScheduled", "Training"]
    assert conditions.is_true(conds, "Training") and not conditions.is_true(conds, "Verified")
    assert conditions.parse_time("2026-01-01T00:05:00Z") == later


def test_spec_checks(make_example: Any) -> None:
    task = make_example("task.yaml")
    assert checks.spec_problems(task) == []
    task["metadata"]["name"] = "x" * 60
    (p,) = checks.spec_problems(task)
    assert p.reason == "InvalidSpec" and "63 characters" in p.message and p.permanent
    task["metadata"]["name"] = "ok"
    task["spec"]["resources"].update(backend="nccl", gpusPerNode=0)
    assert "gpusPerNode must be >= 1" in checks.spec_problems(task)[0].message


def test_vset_and_keys_checks(make_example: Any) -> None:
    task = make_example("task.yaml")
    missing = checks.vset_problem(task, None, grace_over=False)
    assert missing is not None and not missing.permanent
    gone = checks.vset_problem(task, None, grace_over=True)
    assert gone is not None and gone.permanent and gone.reason == "ValidatorSetNotFound"
    assert '"vset"' in gone.message and "default" in gone.message
    waiting = checks.vset_problem(
        task, checks.VsetView("vset", "Progressing", False), grace_over=True
    )
    assert waiting is not None and not waiting.permanent
    assert (
        checks.vset_problem(task, checks.VsetView("vset", "Degraded", True), grace_over=True)
        is None
    )
    lacking = checks.keys_problem(task, frozenset({"miner-0.key"}), grace_over=True)
    assert lacking is not None and "miner-1.key" in lacking.message
    assert (
        checks.keys_problem(task, frozenset({"miner-0.key", "miner-1.key"}), grace_over=True)
        is None
    )


def test_vset_spec_check(make_example: Any) -> None:
    vset = make_example("validatorset.yaml")
    keys = {f"validator-{i}.key" for i in range(4)}
    assert checks.vset_spec_problem(vset, keys) is None
    p = checks.vset_spec_problem(vset, keys - {"validator-3.key"})
    assert p is not None and "validator-3.key" in p.message
    vset["spec"]["replicas"] = 5
    p = checks.vset_spec_problem(vset, keys)
    assert p is not None and p.permanent and "3f+1" in p.message


def test_gang_fit_counts_exactly(make_node: Any) -> None:
    nodes = [gang.node_info(make_node("rig-0")), gang.node_info(make_node("rig-1"))]
    demand = {"cpu": 1000, "memory": 2**30, "nvidia.com/gpu": 4}
    fit = gang.fit(demand, 2, nodes, {}, selector={}, tolerations=[])
    assert fit.fits_now and fit.fits_ever
    used = {"rig-0": {"nvidia.com/gpu": 2, "cpu": 1000, "pods": 1}}
    fit = gang.fit(demand, 2, nodes, used, selector={}, tolerations=[])
    assert not fit.fits_now and fit.fits_ever and fit.now == 1
    assert (
        "rig-0: 2 of 4 nvidia.com/gpu free" in fit.message and "waiting for capacity" in fit.message
    )
    big = gang.fit({**demand, "nvidia.com/gpu": 8}, 2, nodes, {}, selector={}, tolerations=[])
    assert not big.fits_ever
    assert "can never fit" in big.message and "8 nvidia.com/gpu" in big.message
    assert "rig-0: 4 nvidia.com/gpu allocatable, room for 0" in big.message
    small = gang.fit(
        {"cpu": 1000, "memory": 2**30, "nvidia.com/gpu": 1},
        8,
        nodes,
        {},
        selector={},
        tolerations=[],
    )
    assert small.fits_now and small.ever == 8


def test_gang_fit_filters_nodes(make_node: Any) -> None:
    tainted = make_node("rig-t")
    tainted["spec"]["taints"] = [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]
    nodes = [
        gang.node_info(tainted),
        gang.node_info(make_node("rig-x", product="a100")),
        gang.node_info(make_node("rig-down", ready=False)),
    ]
    demand = {"cpu": 1000, "nvidia.com/gpu": 1}
    fit = gang.fit(demand, 1, nodes, {}, selector={"product": "h100"}, tolerations=[])
    assert fit.ever == 0 and "none matches nodeSelector" in fit.message
    fit = gang.fit(demand, 2, nodes, {}, selector={}, tolerations=[])
    assert fit.now == 4 and fit.ever == 8  # rig-t untolerated; rig-down only "ever"
    tol = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert gang.fit(demand, 2, nodes, {}, selector={}, tolerations=tol).now == 8


def test_usage_and_requests() -> None:
    pod = {
        "spec": {
            "nodeName": "rig-0",
            "containers": [
                {"resources": {"limits": {"nvidia.com/gpu": "2", "cpu": "1"}}},
                {"resources": {"requests": {"cpu": "500m"}}},
            ],
            "initContainers": [{"resources": {"requests": {"cpu": "4"}}}],
        },
        "status": {"phase": "Running"},
    }
    assert gang.pod_requests(pod) == {"nvidia.com/gpu": 2, "cpu": 4000}
    done = {**pod, "status": {"phase": "Succeeded"}}
    assert gang.usage([pod, done]) == {"rig-0": {"nvidia.com/gpu": 2, "cpu": 4000, "pods": 1}}


def _reply(view: int, primary: int, seq: int = 5, ready: bool = True) -> dict[str, Any]:
    return {"view": view, "primary": primary, "lastCommittedSeq": seq, "ready": ready}


def test_vset_status_ready_degraded_and_recovering(make_example: Any) -> None:
    vset = make_example("validatorset.yaml")
    reps = [vsets.Replica(i, True, _reply(1, 1, seq=10 + i)) for i in range(4)]
    st = vsets.decide_status(vset, reps, problem=None, now=T0)
    assert st["phase"] == "Ready" and st["readyReplicas"] == 4 and st["primary"] == "vset-1"
    assert st["view"] == 1 and st["lastCommittedSeq"] == 13
    assert conditions.is_true(st["conditions"], "QuorumAvailable") and conditions.is_true(
        st["conditions"], "Ready"
    )
    vset["status"] = st
    reps[3] = vsets.Replica(3, False, None)
    st = vsets.decide_status(vset, reps, problem=None, now=T0)
    assert st["phase"] == "Degraded" and st["readyReplicas"] == 3
    assert conditions.is_true(st["conditions"], "QuorumAvailable") and not conditions.is_true(
        st["conditions"], "Ready"
    )
    # A replica stuck in an old view does not count.
    reps[2] = vsets.Replica(2, True, _reply(0, 0))
    st = vsets.decide_status({**vset, "status": st}, reps, problem=None, now=T0)
    assert st["readyReplicas"] == 2 and not conditions.is_true(st["conditions"], "QuorumAvailable")
    assert "below the quorum" in st["message"]
    failed = vsets.decide_status(
        vset, [], problem=checks.Problem("InvalidKey", "bad", True), now=T0
    )
    assert failed["phase"] == "Failed" and vsets.view_of({**vset, "status": failed}).quorum is False


def test_config_from_env() -> None:
    cfg = configuration.from_env(
        {
            "POT_TRAINER_IMAGE": "reg/pot-trainer:1",
            "POT_WATCH_NAMESPACES": "a,b",
            "POT_NCCL_P2P_DISABLE": "0",
            "POT_GPU_NODE_SELECTOR": '{"pool": "rigs"}',
            "POT_TRAINER_COMMAND": '["python", "-c", "pass"]',
            "POT_OPERATOR_KEY_FILE": "/var/run/pot/operator-key/key",
        }
    )
    assert cfg.operator_key_file == "/var/run/pot/operator-key/key"
    assert cfg.trainer_image == "reg/pot-trainer:1" and cfg.namespaces == ("a", "b")
    assert cfg.nccl_p2p_disable is False and cfg.gpu_node_selector == {"pool": "rigs"}
    assert cfg.trainer_command == ["python", "-c", "pass"]
    with pytest.raises(errors.ConfigError, match="POT_GPU_TOLERATIONS"):
        configuration.from_env({"POT_GPU_TOLERATIONS": "{nope"})
    with pytest.raises(errors.ConfigError, match="store_volume"):
        configuration.from_env({"POT_TRAINER_STORE": "nfs"})
    with pytest.raises(ValueError, match="workers"):
        configuration.Config(workers=0)


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("POT_GANG_TIMEOUT", "2m", "POT_GANG_TIMEOUT='2m': expected a number"),
        ("POT_WORKERS", "2.5", "POT_WORKERS='2.5': expected an integer"),
        ("POT_METRICS_PORT", "http", "POT_METRICS_PORT='http': expected an integer"),
        ("POT_REF_GRACE", "nan", "POT_REF_GRACE='nan': expected a finite number"),
        ("POT_GANG_TIMEOUT", "0", "POT_GANG_TIMEOUT: gang_timeout must be positive"),
        ("POT_TRAINER_STORE", "nfs", "POT_TRAINER_STORE: store_volume must be one of"),
    ],
)
def test_a_bad_config_variable_is_named(variable: str, value: str, said: str) -> None:
    with pytest.raises(errors.ConfigError) as caught:
        configuration.from_env({variable: value})
    assert said in str(caught.value)
    assert configuration.from_env({variable: ""}) == configuration.from_env({})


def test_rbac_is_least_privilege() -> None:
    for rule in rbac.OPERATOR_RULES:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        if "secrets" in rule["resources"]:
            # create: a ValidatorSet's immutable <set>-accepted-keys; never patched or deleted.
            assert set(rule["verbs"]) <= {"create", "get", "list", "watch"}
        assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
    resources = {r for rule in rbac.OPERATOR_RULES for r in rule["resources"]}
    assert not {"roles", "rolebindings", "clusterroles"} & resources


def test_secrets_leave_miner_addresses_and_no_key_material() -> None:
    import base64

    from pot import keys
    from pot.operator import runtime

    k0, k1 = keys.generate(), keys.generate()
    hex0, hex1 = k0.secret.hex(), k1.secret.hex()
    rt = runtime.Runtime(configuration.Config())
    secret = {
        "metadata": {"namespace": "farm", "name": "miner-keys", "resourceVersion": "1"},
        "data": {
            "miner-0.key": base64.b64encode(hex0.encode()).decode(),
            "miner-2.key": base64.b64encode(b"not a key").decode(),
            "other.key": base64.b64encode(hex1.encode()).decode(),
        },
        "stringData": {"miner-1.key": "0x" + hex1},
    }
    rt.observe_secret(secret, deleted=False)
    assert rt.miner_addresses[("farm", "miner-keys")] == {0: k0.address, 1: k1.address}
    held = repr(vars(rt))
    assert hex0 not in held and hex1 not in held
    rt.observe_secret(secret, deleted=True)
    assert ("farm", "miner-keys") not in rt.miner_addresses


def test_gang_fit_holds_room_for_released_unbound_pods(make_node: Any) -> None:
    """Claims take room first fit, by name, where they may go; "ever" ignores them."""
    nodes = [gang.node_info(make_node("rig-0")), gang.node_info(make_node("rig-1"))]
    demand = {"cpu": 1000, "nvidia.com/gpu": 4}
    claim = gang.Claim(requests={"cpu": 1000, "nvidia.com/gpu": 2}, count=3)
    assert gang.hold([claim], nodes, {}) == {
        "rig-0": {"cpu": 2000, "nvidia.com/gpu": 4, "pods": 2},
        "rig-1": {"cpu": 1000, "nvidia.com/gpu": 2, "pods": 1},
    }
    fit = gang.fit(demand, 1, nodes, {}, selector={}, tolerations=[], pending=[claim])
    assert fit.now == 0 and fit.fits_ever and not fit.fits_now
    assert "rig-1: 2 of 4 nvidia.com/gpu free (2 held for 1 released pod not bound yet)" in (
        fit.message
    )
    # A claim confined elsewhere by its own selector holds nothing on these nodes.
    away = gang.Claim(requests={"nvidia.com/gpu": 4}, selector={"product": "h100"})
    assert gang.fit(demand, 2, nodes, {}, selector={}, tolerations=[], pending=[away]).fits_now
    # More claims than room: the rest waits like any pod; "can never fit" is unchanged.
    crowd = gang.Claim(requests={"nvidia.com/gpu": 4}, count=5)
    assert gang.hold([crowd], nodes, {})["rig-1"]["pods"] == 1
    huge = gang.fit(
        {"nvidia.com/gpu": 8}, 1, nodes, {}, selector={}, tolerations=[], pending=[crowd]
    )
    assert "can never fit" in huge.message and "room for 0" in huge.message


def test_only_released_unbound_default_scheduled_pods_claim() -> None:
    pod: dict[str, Any] = {
        "metadata": {"labels": {}},
        "spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": "2"}}}]},
        "status": {"phase": "Pending"},
    }
    assert gang.awaits_placement(pod)
    assert gang.claim_of(pod).requests == {"nvidia.com/gpu": 2}
    for change in (
        {"spec": {**pod["spec"], "nodeName": "rig-0"}},
        {"spec": {**pod["spec"], "schedulingGates": [{"name": "pot.dev/gang"}]}},
        {"spec": {**pod["spec"], "schedulerName": "volcano"}},
        {"metadata": {"labels": {"kueue.x-k8s.io/queue-name": "q"}}},
        {"metadata": {"labels": {}, "deletionTimestamp": "2026-01-01T00:00:00Z"}},
        {"status": {"phase": "Failed"}},
    ):
        assert not gang.awaits_placement({**pod, **change}), change
