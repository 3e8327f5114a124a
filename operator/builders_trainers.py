"""Pure builders of a TrainingTask's children: headless Service, the gang of
trainer pods and (optionally) state PVCs (DESIGN §4.1, docs/protocol.md).

Gang shape (Kubeflow Trainer's PyTorchJob is the model users know; its
tracker's complaints shaped these choices):

- one pod per node rank, named ``<task>-node-<rank>`` (also its hostname, in
  the subdomain of the headless Service ``<task>``), so rank 0 is reachable as
  ``MASTER_ADDR`` before anything is ready;
- no pod is schedulable before the whole gang fits (Kubeflow #948: partial
  gangs that start and hang): a gang that fits when it is created is created
  ungated (the fit was counted first), one that does not is created with the
  scheduling gate ``pot.dev/gang`` and the gates are removed from all pods
  together once it fits — unless the task carries a Kueue or Volcano queue, in
  which case admission is theirs (Volcano: through a PodGroup with
  ``minMember`` = nodes) and no gate of ours is set;
- the task's ``.spec`` travels in the pod's own annotation ``pot.dev/spec``,
  projected to ``spec.json`` by the downward API: no ConfigMap per task, and a
  pod always sees the spec it was created for;
- ``restartPolicy: Never``: a failing member fails its pod and the operator
  restarts the *whole* gang from the last committed checkpoint (Kubeflow #1579:
  one failed worker leaving the others running; #2000: restarts that never
  regroup after NCCL timeouts — a per-pod restart rejoins a dead rendezvous);
- the attempt number is a label, so pods of an old attempt are recognisable;
- the pods run as the images' non-root uid with no capabilities
  (``builders_security``); a hostPath store is handed to that uid by a small
  init container, since the kubelet creates a hostPath owned by root.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pot import quantities
from pot.operator import builders_security as security
from pot.operator import builders_validators, names
from pot.operator.config import Config

Body = Mapping[str, Any]

MASTER_PORT = 29500
STORE_PORT = 8090
SHM_DIR = "/dev/shm"  # noqa: S108 - a mountPath in the pod, not a temp file here
SPEC_DIR = "/etc/pot/task"
STATE_DIR = "/var/lib/pot"
STORE_DIR = f"{STATE_DIR}/store"
MINER_DIR = "/var/run/pot/miner"


def _meta(task: Body, name: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    meta = task["metadata"]
    return {
        "name": name,
        "namespace": meta["namespace"],
        "labels": dict(labels) if labels is not None else names.task_labels(meta["name"]),
        "ownerReferences": [names.owner_reference(task)],
    }


def backend(spec: Mapping[str, Any]) -> str:
    """nccl or gloo (``auto``: nccl with GPUs, gloo without)."""
    res = spec["resources"]
    chosen = str(res.get("backend", "auto"))
    if chosen == "auto":
        return "nccl" if int(res.get("gpusPerNode", 0)) > 0 else "gloo"
    return chosen


def queue_of(task: Body) -> tuple[str, str] | None:
    """(``kueue`` | ``volcano``, queue) when an external gang scheduler admits this task."""
    meta = task["metadata"]
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    if labels.get(names.KUEUE_QUEUE):
        return "kueue", labels[names.KUEUE_QUEUE]
    queue = annotations.get(names.VOLCANO_QUEUE) or labels.get(names.VOLCANO_QUEUE)
    if queue:
        return "volcano", queue
    return None


def spec_json(task: Body) -> str:
    """The TrainingTask ``.spec`` as canonical JSON (the trainer's ``--spec`` file)."""
    return json.dumps(task["spec"], sort_keys=True, separators=(",", ":"))


def build_service_spec(task: Body) -> dict[str, Any]:
    """Headless Service ``<task>``: DNS for ``<task>-node-<r>.<task>`` (rendezvous, blob store)."""
    name = task["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(task, names.trainer_service(name)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": names.task_selector(name),
            "ports": [
                {"name": "c10d", "port": MASTER_PORT, "targetPort": MASTER_PORT, "protocol": "TCP"},
                {"name": "store", "port": STORE_PORT, "targetPort": STORE_PORT, "protocol": "TCP"},
            ],
        },
    }


def build_store_claim_spec(task: Body, rank: int, config: Config) -> dict[str, Any]:
    """PVC ``<task>-store-<rank>``: the rank's checkpoints survive a gang restart."""
    name = task["metadata"]["name"]
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": config.store_size}},
    }
    if config.storage_class:
        spec["storageClassName"] = config.storage_class
    labels = {**names.task_labels(name), names.LABEL_RANK: str(rank)}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(task, names.store_claim(name, rank), labels),
        "spec": spec,
    }


def nccl_env(spec: Mapping[str, Any], config: Config) -> list[dict[str, str]]:
    """The mining-farm NCCL preset (sockets over Ethernet, no IB, no P2P over
    risers), with the operator's defaults overridden by the task's ``spec.nccl``."""
    nccl = spec.get("nccl") or {}
    env = {
        "NCCL_SOCKET_IFNAME": str(nccl.get("socketIfname", config.nccl_socket_ifname)),
        "NCCL_IB_DISABLE": "1" if nccl.get("ibDisable", config.nccl_ib_disable) else "0",
        "NCCL_P2P_DISABLE": "1" if nccl.get("p2pDisable", config.nccl_p2p_disable) else "0",
    }
    for key, value in sorted((nccl.get("env") or {}).items()):
        env[str(key)] = str(value)
    return [{"name": k, "value": v} for k, v in env.items()]


def trainer_command(task: Body, config: Config) -> list[str]:
    """torchrun + ``pot.trainer`` exactly as docs/protocol.md gives it."""
    if config.trainer_command is not None:
        return list(config.trainer_command)
    meta, spec = task["metadata"], task["spec"]
    ns, name = meta["namespace"], meta["name"]
    vset = spec["validatorSetRef"]["name"]
    url = f"http://{names.service_host(vset, ns, config.cluster_domain)}:{builders_validators.HTTP_PORT}"
    return [
        "torchrun",
        "--nnodes=$(PET_NNODES)",
        "--nproc-per-node=$(PET_NPROC_PER_NODE)",
        "--node-rank=$(PET_NODE_RANK)",
        "--master-addr=$(MASTER_ADDR)",
        "--master-port=$(MASTER_PORT)",
        "-m", "pot.trainer",
        "--task", f"{ns}/{name}",
        "--spec", f"{SPEC_DIR}/spec.json",
        "--store", STORE_DIR,
        "--validator-url", url,
        "--miner-key-file", f"{MINER_DIR}/miner-$(PET_NODE_RANK).key",
        # The pod's stable DNS name, not its IP: segments keep pointing at the
        # checkpoints after a restarted pod comes back with another address.
        "--advertise-url", f"http://$(POD_NAME).{names.service_host(names.trainer_service(name), ns, config.cluster_domain)}:{STORE_PORT}",
    ]  # fmt: skip


def cheat_args(task: Body, rank: int, config: Config) -> list[str]:
    """``--cheat MODE`` for the node named by the ``pot.dev/cheat: "RANK=MODE"`` annotation.

    A demonstration and test facility (``pot demo``, tests/e2e): it lets the
    rest of the system be shown catching a dishonest miner. A farm's own
    trainer image decides what actually runs; validators never trust it.
    """
    if config.trainer_command is not None:
        return []
    value = str(((task["metadata"].get("annotations") or {}).get(names.ANNOTATION_CHEAT)) or "")
    target, sep, mode = value.partition("=")
    if sep and target.strip() == str(rank) and mode.strip():
        return ["--cheat", mode.strip()]
    return []


def master_addr(task: Body, config: Config) -> str:
    """DNS name of node rank 0 (the c10d rendezvous host)."""
    meta = task["metadata"]
    name = meta["name"]
    service = names.service_host(
        names.trainer_service(name), meta["namespace"], config.cluster_domain
    )
    return f"{names.trainer_pod(name, 0)}.{service}"


def build_pod_spec(
    task: Body, rank: int, attempt: int, config: Config, *, gated: bool = True
) -> dict[str, Any]:
    """Trainer pod of ``rank`` for gang attempt ``attempt``.

    ``gated``: carry the gang gate (the operator passes False only for a gang
    whose fit it has already counted). Queued tasks never carry it.
    """
    meta, spec = task["metadata"], task["spec"]
    name = meta["name"]
    res = spec["resources"]
    nodes = int(res["nodes"])
    gpus = int(res.get("gpusPerNode", 0))
    env: list[dict[str, Any]] = [
        {"name": "PET_NNODES", "value": str(nodes)},
        {"name": "PET_NPROC_PER_NODE", "value": str(max(gpus, 1))},
        {"name": "PET_NODE_RANK", "value": str(rank)},
        {"name": "MASTER_ADDR", "value": master_addr(task, config)},
        {"name": "MASTER_PORT", "value": str(MASTER_PORT)},
        {"name": "POT_TASK", "value": f"{meta['namespace']}/{name}"},
        # The trainer's run seed mixes in the task object's uid (docs/protocol.md, "Run
        # seed"), as the validators' replay does with the uid of the registration.
        {"name": "POT_TASK_UID", "value": str(meta["uid"])},
        {"name": "POT_ATTEMPT", "value": str(attempt)},
        {"name": "POT_BACKEND", "value": backend(spec)},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]
    if gpus > 0:
        env += nccl_env(spec, config)
    cpu, memory = str(res.get("cpu", "1")), str(res.get("memory", "2Gi"))
    limits: dict[str, str] = {"cpu": cpu, "memory": memory}
    if gpus > 0:
        limits[names.GPU] = str(gpus)
    image = res.get("image") or (spec.get("model") or {}).get("image") or config.trainer_image
    container: dict[str, Any] = {
        "name": "trainer",
        "image": image,
        "command": trainer_command(task, config) + cheat_args(task, rank, config),
        "env": env,
        "ports": [
            {"name": "c10d", "containerPort": MASTER_PORT, "protocol": "TCP"},
            {"name": "store", "containerPort": STORE_PORT, "protocol": "TCP"},
        ],
        "resources": {"requests": dict(limits), "limits": limits},
        "volumeMounts": [
            {"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
            {"name": "miner-key", "mountPath": MINER_DIR, "readOnly": True},
            {"name": "state", "mountPath": STATE_DIR},
        ],
        "securityContext": security.container_security_context(),
    }
    key = f"miner-{rank}.key"
    state: dict[str, Any]
    inits: list[dict[str, Any]] = []
    if config.store_volume == "pvc":
        state = {
            "name": "state",
            "persistentVolumeClaim": {"claimName": names.store_claim(name, rank)},
        }
    elif config.store_volume == "hostPath":
        # Keyed by the task's UID: a new task reusing a deleted one's name
        # never resumes from the old task's checkpoints.
        path = f"{config.store_host_dir.rstrip('/')}/{meta['uid']}/rank-{rank}"
        state = {"name": "state", "hostPath": {"path": path, "type": "DirectoryOrCreate"}}
        # The kubelet creates it as root, mode 0755, and never applies fsGroup
        # to a hostPath: give it to the trainer's uid before the trainer runs.
        # (A PVC and an emptyDir need no such step: fsGroup covers them.)
        own = {"cpu": cpu, "memory": memory}  # the trainer's, less its GPUs
        inits.append(
            security.build_state_owner_init(
                image, "state", STATE_DIR, {"requests": own, "limits": own}
            )
        )
    else:
        state = {"name": "state", "emptyDir": {}}
    labels = {
        **names.task_labels(name),
        names.LABEL_RANK: str(rank),
        names.LABEL_ATTEMPT: str(attempt),
    }
    annotations: dict[str, str] = {names.ANNOTATION_SPEC: spec_json(task)}
    pod_spec: dict[str, Any] = {
        "hostname": names.trainer_pod(name, rank),
        "subdomain": names.trainer_service(name),
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": security.pod_security_context(),
        "containers": [container],
        "volumes": [
            {
                "name": "spec",
                "downwardAPI": {
                    "items": [
                        {
                            "path": "spec.json",
                            "fieldRef": {
                                "fieldPath": f"metadata.annotations['{names.ANNOTATION_SPEC}']"
                            },
                        }
                    ]
                },
            },
            # Only this rank's key: a node never holds another miner's identity.
            {
                "name": "miner-key",
                "secret": {
                    "secretName": spec["minerKeysSecretRef"]["name"],
                    "items": [{"key": key, "path": key}],
                    "defaultMode": 0o400,
                },
            },
            state,
        ],
        "terminationGracePeriodSeconds": 30,
    }
    if gpus > 0:
        # torchrun runs a process per GPU, and NCCL passes intra-node traffic through
        # /dev/shm (all of it with P2P off over risers); a container's own /dev/shm is
        # 64 MiB, too small for a rig's ranks (NCCL fails at init in ncclShmOpen). A
        # memory-backed emptyDir is charged to the container's memory limit.
        container["volumeMounts"].append({"name": "dshm", "mountPath": SHM_DIR})
        pod_spec["volumes"].append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
    if inits:
        pod_spec["initContainers"] = inits
    selector = dict(config.gpu_node_selector) if gpus > 0 else {}
    selector.update(res.get("nodeSelector") or {})
    if selector:
        pod_spec["nodeSelector"] = selector
    tolerations = list(config.gpu_tolerations) if gpus > 0 else []
    tolerations += list(res.get("tolerations") or [])
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if res.get("priorityClassName"):
        pod_spec["priorityClassName"] = res["priorityClassName"]
    queue = queue_of(task)
    if queue is None:
        if gated:
            pod_spec["schedulingGates"] = [{"name": names.GANG_GATE}]
    elif queue[0] == "kueue":
        # Kueue's pod-group integration gates and admits the group as one.
        labels[names.KUEUE_QUEUE] = queue[1]
        labels[names.KUEUE_GROUP] = f"{name}-{attempt}"
        annotations[names.KUEUE_GROUP_COUNT] = str(nodes)
    else:
        pod_spec["schedulerName"] = "volcano"
        annotations[names.VOLCANO_QUEUE] = queue[1]
        annotations[names.VOLCANO_GROUP] = names.volcano_podgroup(name, attempt)
    pod_meta = _meta(task, names.trainer_pod(name, rank), labels)
    pod_meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": pod_spec}


def build_volcano_podgroup(task: Body, attempt: int) -> dict[str, Any]:
    """Volcano PodGroup ``<task>-<attempt>``: Volcano binds none of the gang's pods
    until ``minMember`` (= nodes) of them fit at once (its gang plugin); without it
    Volcano would make a group of one per pod, which is no gang at all."""
    meta, spec = task["metadata"], task["spec"]
    res = spec["resources"]
    nodes = int(res["nodes"])
    gpus = int(res.get("gpusPerNode", 0))
    per_pod: dict[str, Any] = {
        "cpu": str(res.get("cpu", "1")),
        "memory": str(res.get("memory", "2Gi")),
    }
    if gpus > 0:
        per_pod[names.GPU] = str(gpus)
    queue = queue_of(task)
    body: dict[str, Any] = {
        "apiVersion": names.VOLCANO_API_VERSION,
        "kind": "PodGroup",
        "metadata": _meta(task, names.volcano_podgroup(meta["name"], attempt)),
        "spec": {
            "minMember": nodes,
            # Requests of the whole gang, so Volcano's enqueue step admits it only
            # when all of it can run (quantities scale by the node count).
            "minResources": {
                k: quantities.render(k, quantities.amount(k, v) * nodes) for k, v in per_pod.items()
            },
            "queue": queue[1] if queue else "default",
        },
    }
    if res.get("priorityClassName"):
        body["spec"]["priorityClassName"] = res["priorityClassName"]
    return body


def build_release_patch() -> dict[str, Any]:
    """Strategic-merge/JSON-merge patch removing every scheduling gate of a pod."""
    return {"spec": {"schedulingGates": None}}


def build_registration(task: Body) -> dict[str, Any]:
    """Body of ``POST /v1/tasks`` (docs/protocol.md)."""
    meta = task["metadata"]
    return {
        "id": f"{meta['namespace']}/{meta['name']}",
        "uid": str(meta["uid"]),
        "spec": dict(task["spec"]),
    }
