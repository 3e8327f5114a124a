"""Every builder, without a cluster: names, owners, command lines, mounts, env, gates."""

from __future__ import annotations

import json
from typing import Any

from pot.operator import builders_trainers as bt
from pot.operator import builders_validators as bv
from pot.operator import names
from pot.operator.config import Config

IDS = [bv.Identity(address=f"0x{i:040x}", public_key="0x04" + f"{i:02x}" * 64) for i in range(4)]


def _owned(obj: dict[str, Any], owner: dict[str, Any]) -> None:
    (ref,) = obj["metadata"]["ownerReferences"]
    assert ref["uid"] == owner["metadata"]["uid"] and ref["controller"] is True
    assert ref["kind"] == owner["kind"] and ref["blockOwnerDeletion"] is True
    assert obj["metadata"]["namespace"] == owner["metadata"]["namespace"]


def test_peers_json_follows_protocol(vset: dict[str, Any]) -> None:
    doc = bv.build_peers(vset, IDS, Config())
    assert doc["n"] == 4 and doc["f"] == 1
    assert doc["replicas"][2] == {
        "id": 2,
        "host": "vset-2.vset-peers.farm.svc.cluster.local",
        "pbftPort": 7000,
        "httpPort": 8080,
        "address": IDS[2].address,
        "publicKey": IDS[2].public_key,
    }
    assert doc["chain"] == {
        "chainId": 31337,
        "contract": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
        "confirmations": 1,
        "rpcUrl": "http://chain.pot-system.svc.cluster.local:8545",
    }
    assert doc["pbft"]["checkpointInterval"] == 64


def test_peers_json_names_the_operator_once_it_has_a_key(vset: dict[str, Any]) -> None:
    assert "operator" not in bv.build_peers(vset, IDS, Config())
    addr = "0x" + "ab" * 20
    assert bv.build_peers(vset, IDS, Config(operator_address=addr))["operator"] == addr


def test_rpc_secret_never_lands_in_the_configmap(vset: dict[str, Any]) -> None:
    vset["spec"]["chain"].pop("rpcUrl")
    vset["spec"]["chain"]["rpcSecretRef"] = {"name": "rpc", "key": "url"}
    doc = bv.build_peers(vset, IDS, Config(chain_rpc_url="http://fallback"))
    assert "rpcUrl" not in doc["chain"]
    sts = bv.build_statefulset_spec(vset, Config(), bv.peers_json(doc))
    settle = sts["spec"]["template"]["spec"]["containers"][1]
    (rpc,) = [e for e in settle["env"] if e["name"] == "POT_CHAIN_RPC_URL"]
    assert rpc["valueFrom"]["secretKeyRef"] == {"name": "rpc", "key": "url"}


def test_validator_children_are_owned_and_named(vset: dict[str, Any]) -> None:
    children = bv.build_all(vset, IDS, Config())
    kinds = [(c["kind"], c["metadata"]["name"]) for c in children]
    assert kinds == [
        ("ServiceAccount", "vset-validator"),
        ("ConfigMap", "vset-config"),
        ("Service", "vset-peers"),
        ("Service", "vset"),
        ("PodDisruptionBudget", "vset"),
        ("StatefulSet", "vset"),
    ]
    for child in children:
        _owned(child, vset)
        assert child["metadata"]["labels"][names.LABEL_COMPONENT] == "validator"
    sa, cm, peers, client, pdb, _ = children
    assert sa["automountServiceAccountToken"] is False
    assert json.loads(cm["data"]["peers.json"])["n"] == 4
    assert (
        peers["spec"]["clusterIP"] == "None" and peers["spec"]["publishNotReadyAddresses"] is True
    )
    assert {p["port"] for p in peers["spec"]["ports"]} == {7000, 8080}
    assert client["spec"]["ports"][0]["port"] == 8080
    assert pdb["spec"]["maxUnavailable"] == 1


def test_statefulset_runs_validator_and_settlement(vset: dict[str, Any]) -> None:
    text = bv.peers_json(bv.build_peers(vset, IDS, Config()))
    sts = bv.build_statefulset_spec(vset, Config(), text)
    spec = sts["spec"]
    assert spec["replicas"] == 4 and spec["serviceName"] == "vset-peers"
    assert spec["podManagementPolicy"] == "Parallel"
    pod = spec["template"]["spec"]
    validator, settlement = pod["containers"]
    assert validator["command"] == [
        "python", "-m", "pot.validator", "--config", "/etc/pot/validators/peers.json",
        "--replica-id", "$(ORDINAL)", "--key-file", "/var/run/pot/keys/validator-$(ORDINAL).key",
        "--data-dir", "/var/lib/pot/validator", "--device", "cpu", "--max-concurrent", "1",
    ]  # fmt: skip
    assert settlement["command"] == [
        "python", "-m", "pot.settlement", "--validator-url", "http://127.0.0.1:8080",
        "--config", "/etc/pot/validators/peers.json",
        "--key-file", "/var/run/pot/keys/validator-$(ORDINAL).key", "--state-dir", "/var/lib/pot/settlement",
    ]  # fmt: skip
    ordinal = validator["env"][0]
    assert (
        ordinal["valueFrom"]["fieldRef"]["fieldPath"]
        == "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    # The Secret with every replica's key is mounted only into the init container.
    secret_vols = {v["name"] for v in pod["volumes"] if "secret" in v}
    assert secret_vols == {"keys-source"}
    for container in pod["containers"]:
        assert secret_vols.isdisjoint(m["name"] for m in container["volumeMounts"])
    (init,) = pod["initContainers"]
    assert {m["name"] for m in init["volumeMounts"]} == {"keys-source", "key"}
    assert validator["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8080}
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert spec["template"]["metadata"]["annotations"][
        names.ANNOTATION_CONFIG_HASH
    ] == bv.config_hash(text)
    assert spec["volumeClaimTemplates"][0]["metadata"]["name"] == "data"


def test_command_overrides(vset: dict[str, Any], task: dict[str, Any]) -> None:
    cfg = Config(
        validator_command=["python", "-c", "pass"],
        settlement_command=["sleep", "1"],
        trainer_command=["true"],
    )
    sts = bv.build_statefulset_spec(vset, cfg, "{}")
    assert [c["command"] for c in sts["spec"]["template"]["spec"]["containers"]] == [
        ["python", "-c", "pass"],
        ["sleep", "1"],
    ]
    assert bt.build_pod_spec(task, 0, 0, cfg)["spec"]["containers"][0]["command"] == ["true"]


def test_cheat_annotation_targets_one_rank(task: dict[str, Any]) -> None:
    task["metadata"]["annotations"] = {names.ANNOTATION_CHEAT: "1=perturb-weights"}
    honest = bt.build_pod_spec(task, 0, 0, Config())["spec"]["containers"][0]["command"]
    cheater = bt.build_pod_spec(task, 1, 0, Config())["spec"]["containers"][0]["command"]
    assert "--cheat" not in honest
    assert cheater[-2:] == ["--cheat", "perturb-weights"]
    stand_in = Config(trainer_command=["true"])
    assert bt.build_pod_spec(task, 1, 0, stand_in)["spec"]["containers"][0]["command"] == ["true"]


def test_trainer_pod_command_env_and_mounts(task: dict[str, Any]) -> None:
    pod = bt.build_pod_spec(task, 1, 2, Config())
    _owned(pod, task)
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["name"] == "mlp-demo-node-1"
    assert meta["labels"][names.LABEL_RANK] == "1" and meta["labels"][names.LABEL_ATTEMPT] == "2"
    assert spec["hostname"] == "mlp-demo-node-1" and spec["subdomain"] == "mlp-demo"
    assert spec["restartPolicy"] == "Never"
    assert spec["schedulingGates"] == [{"name": "pot.dev/gang"}]
    ungated = bt.build_pod_spec(task, 1, 2, Config(), gated=False)["spec"]
    assert "schedulingGates" not in ungated  # a gang whose fit was counted before its creates
    (container,) = spec["containers"]
    assert container["command"] == [
        "torchrun", "--nnodes=$(PET_NNODES)", "--nproc-per-node=$(PET_NPROC_PER_NODE)",
        "--node-rank=$(PET_NODE_RANK)", "--master-addr=$(MASTER_ADDR)", "--master-port=$(MASTER_PORT)",
        "-m", "pot.trainer", "--task", "farm/mlp-demo", "--spec", "/etc/pot/task/spec.json",
        "--store", "/var/lib/pot/store", "--validator-url", "http://vset.farm.svc.cluster.local:8080",
        "--miner-key-file", "/var/run/pot/miner/miner-$(PET_NODE_RANK).key",
        "--advertise-url", "http://$(POD_NAME).mlp-demo.farm.svc.cluster.local:8090",
    ]  # fmt: skip
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert (
        env["PET_NNODES"] == "2"
        and env["PET_NPROC_PER_NODE"] == "1"
        and env["PET_NODE_RANK"] == "1"
    )
    assert env["MASTER_ADDR"] == "mlp-demo-node-0.mlp-demo.farm.svc.cluster.local"
    assert env["MASTER_PORT"] == "29500"
    # The trainer derives its run seed from the task object's uid, as the validators do.
    assert env["POT_TASK_UID"] == task["metadata"]["uid"]
    assert not any(k.startswith("NCCL_") for k in env), "CPU tasks get no NCCL preset"
    assert container["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {
        "/etc/pot/task": "spec",
        "/var/run/pot/miner": "miner-key",
        "/var/lib/pot": "state",
    }
    vols = {v["name"]: v for v in spec["volumes"]}
    # The spec rides on the pod itself (downward API), not a ConfigMap per task.
    (item,) = vols["spec"]["downwardAPI"]["items"]
    assert item["path"] == "spec.json"
    annotation = item["fieldRef"]["fieldPath"]
    assert annotation == "metadata.annotations['pot.dev/spec']"
    assert json.loads(meta["annotations"]["pot.dev/spec"]) == task["spec"]
    assert vols["miner-key"]["secret"]["items"] == [{"key": "miner-1.key", "path": "miner-1.key"}]
    # Default: node-local state keyed by the task's UID (a reused name never resumes).
    assert vols["state"]["hostPath"] == {
        "path": f"/var/lib/pot/tasks/{task['metadata']['uid']}/rank-1",
        "type": "DirectoryOrCreate",
    }
    claim = bt.build_pod_spec(task, 1, 0, Config(store_volume="pvc"))["spec"]["volumes"][2]
    assert claim == {"name": "state", "persistentVolumeClaim": {"claimName": "mlp-demo-store-1"}}
    assert bt.build_pod_spec(task, 1, 0, Config(store_volume="emptyDir"))["spec"]["volumes"][2] == {
        "name": "state",
        "emptyDir": {},
    }
    assert bt.build_pod_spec(task, 0, 0, Config(store_host_dir="/data/pot/"))["spec"]["volumes"][2][
        "hostPath"
    ]["path"] == (f"/data/pot/{task['metadata']['uid']}/rank-0")


def test_gpu_pod_limits_selector_tolerations_and_nccl(gpu_task: dict[str, Any]) -> None:
    cfg = Config(
        gpu_node_selector={"pool": "rigs"}, gpu_tolerations=[{"key": "rig", "operator": "Exists"}]
    )
    pod = bt.build_pod_spec(gpu_task, 0, 0, cfg)
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert spec["nodeSelector"] == {"pool": "rigs", "nvidia.com/gpu.present": "true"}
    assert {"key": "rig", "operator": "Exists"} in spec["tolerations"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PET_NPROC_PER_NODE"] == "8"
    assert (env["NCCL_SOCKET_IFNAME"], env["NCCL_IB_DISABLE"], env["NCCL_P2P_DISABLE"]) == (
        "eth0",
        "1",
        "1",
    )


def test_nccl_preset_is_overridable(gpu_task: dict[str, Any]) -> None:
    gpu_task["spec"]["nccl"] = {
        "socketIfname": "enp3s0",
        "p2pDisable": False,
        "env": {"NCCL_DEBUG": "INFO"},
    }
    env = {
        e["name"]: e["value"] for e in bt.nccl_env(gpu_task["spec"], Config(nccl_ib_disable=False))
    }
    assert env == {
        "NCCL_SOCKET_IFNAME": "enp3s0",
        "NCCL_IB_DISABLE": "0",
        "NCCL_P2P_DISABLE": "0",
        "NCCL_DEBUG": "INFO",
    }


def test_kueue_and_volcano_take_over_admission(task: dict[str, Any]) -> None:
    task["metadata"]["labels"] = {names.KUEUE_QUEUE: "farm-queue"}
    pod = bt.build_pod_spec(task, 0, 1, Config())
    assert "schedulingGates" not in pod["spec"]
    assert pod["metadata"]["labels"][names.KUEUE_GROUP] == "mlp-demo-1"
    assert pod["metadata"]["annotations"][names.KUEUE_GROUP_COUNT] == "2"
    task["metadata"]["labels"] = {}
    task["metadata"]["annotations"] = {names.VOLCANO_QUEUE: "q"}
    pod = bt.build_pod_spec(task, 0, 3, Config())
    assert pod["spec"]["schedulerName"] == "volcano" and "schedulingGates" not in pod["spec"]
    assert pod["metadata"]["annotations"][names.VOLCANO_GROUP] == "mlp-demo-3"
    assert bt.queue_of(task) == ("volcano", "q")
    group = bt.build_volcano_podgroup(task, 3)
    _owned(group, task)
    assert group["apiVersion"] == "scheduling.volcano.sh/v1beta1" and group["kind"] == "PodGroup"
    assert group["metadata"]["name"] == "mlp-demo-3"
    # The whole gang or nothing, with the gang's summed requests (2 nodes x 1 CPU x 1Gi).
    assert group["spec"] == {
        "minMember": 2,
        "minResources": {"cpu": "2", "memory": "2Gi"},
        "queue": "q",
    }


def test_task_children(task: dict[str, Any]) -> None:
    assert json.loads(bt.spec_json(task)) == task["spec"]
    svc = bt.build_service_spec(task)
    assert svc["metadata"]["name"] == "mlp-demo" and svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"] == names.task_selector("mlp-demo")
    pvc = bt.build_store_claim_spec(task, 1, Config(storage_class="fast", store_size="5Gi"))
    assert pvc["metadata"]["name"] == "mlp-demo-store-1"
    assert (
        pvc["spec"]["storageClassName"] == "fast"
        and pvc["spec"]["resources"]["requests"]["storage"] == "5Gi"
    )
    for obj in (svc, pvc):
        _owned(obj, task)
    assert bt.build_release_patch() == {"spec": {"schedulingGates": None}}
    assert bt.build_registration(task) == {
        "id": "farm/mlp-demo",
        "uid": task["metadata"]["uid"],
        "spec": task["spec"],
    }


def test_backend_auto() -> None:
    assert bt.backend({"resources": {"gpusPerNode": 2, "backend": "auto"}}) == "nccl"
    assert bt.backend({"resources": {"gpusPerNode": 0}}) == "gloo"


def test_gpu_pod_gets_a_memory_backed_dev_shm(gpu_task: dict[str, Any]) -> None:
    """torchrun starts one process per GPU; with P2P off (risers) NCCL moves intra-node
    traffic through /dev/shm, which a container gets at 64 MiB: 8 ranks' buffers do not
    fit, and NCCL fails at init (ncclShmOpen). The pod mounts a tmpfs there instead."""
    pod = bt.build_pod_spec(gpu_task, 0, 0, Config())
    (container,) = pod["spec"]["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    assert volume["emptyDir"]["medium"] == "Memory"
    # Its pages count against the container's memory limit: no separate sizeLimit to exceed.
    assert "sizeLimit" not in volume["emptyDir"]


def test_cuda_validators_get_a_gpu(make_example: Any) -> None:
    """spec.verification.device cuda replays on a GPU: without one in the pod every audit
    fails (AUDIT_ERROR) and no audited segment is ever paid. Each replica asks for one,
    on the operator's GPU nodes, unless spec.resources already names GPUs."""
    vset = make_example("validatorset.yaml", ns="farm")
    vset["spec"]["verification"] = {"device": "cuda", "maxConcurrent": 1}
    cfg = Config(
        gpu_node_selector={"pool": "rigs"}, gpu_tolerations=[{"key": "rig", "operator": "Exists"}]
    )
    pod = bv.build_statefulset_spec(vset, cfg, "{}")["spec"]["template"]["spec"]
    validator = next(c for c in pod["containers"] if c["name"] == "validator")
    assert validator["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"pool": "rigs"}
    assert pod["tolerations"] == [{"key": "rig", "operator": "Exists"}]
    settlement = next(c for c in pod["containers"] if c["name"] == "settlement")
    assert "nvidia.com/gpu" not in str(settlement.get("resources"))  # the sidecar needs none
    # The set's own resources win, and CPU replays take no GPU.
    vset["spec"]["resources"] = {"limits": {"nvidia.com/gpu": "2", "memory": "8Gi"}}
    vset["spec"]["nodeSelector"] = {"pool": "validators"}
    pod = bv.build_statefulset_spec(vset, cfg, "{}")["spec"]["template"]["spec"]
    validator = next(c for c in pod["containers"] if c["name"] == "validator")
    assert validator["resources"] == {"limits": {"nvidia.com/gpu": "2", "memory": "8Gi"}}
    assert pod["nodeSelector"] == {"pool": "validators"}
    vset["spec"]["verification"]["device"] = "cpu"
    del vset["spec"]["resources"], vset["spec"]["nodeSelector"]
    pod = bv.build_statefulset_spec(vset, cfg, "{}")["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in str(pod)
    assert "nodeSelector" not in pod and "tolerations" not in pod
