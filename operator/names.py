"""Names and labels of every object the operator creates, in one place.

Child names are deterministic functions of the owner's name (never generated
suffixes): a create that is repeated after a crash hits 409 AlreadyExists
instead of making a duplicate. That single rule is what keeps a kill -9 at any
point of a reconcile from ever producing a second pod for the same rank.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

GROUP = "pot.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
TASKS = "trainingtasks"
VSETS = "validatorsets"

#: The scheduling gate trainer pods are created with; removed from all of a
#: gang's pods together when the whole gang fits (Kubeflow #948: partial gangs).
GANG_GATE = f"{GROUP}/gang"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_TASK = f"{GROUP}/task"
LABEL_RANK = f"{GROUP}/node-rank"
LABEL_ATTEMPT = f"{GROUP}/attempt"
LABEL_VSET = f"{GROUP}/validator-set"
#: Set by the StatefulSet controller (Kubernetes >= 1.28) on every replica.
LABEL_POD_INDEX = "apps.kubernetes.io/pod-index"
ANNOTATION_CONFIG_HASH = f"{GROUP}/config-hash"
#: ``"RANK=MODE"``: that node's trainer cheats on purpose (demos and tests).
ANNOTATION_CHEAT = f"{GROUP}/cheat"

#: Queue markers that hand gang admission to Kueue or Volcano instead of us.
KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
KUEUE_GROUP = "kueue.x-k8s.io/pod-group-name"
KUEUE_GROUP_COUNT = "kueue.x-k8s.io/pod-group-total-count"
VOLCANO_QUEUE = "scheduling.volcano.sh/queue-name"
VOLCANO_GROUP = "scheduling.k8s.io/group-name"
VOLCANO_API_VERSION = "scheduling.volcano.sh/v1beta1"
#: The task's ``.spec`` as JSON on each trainer pod (projected to spec.json).
ANNOTATION_SPEC = f"{GROUP}/spec"

GPU = "nvidia.com/gpu"
MANAGER = "pot-operator"


def trainer_pod(task: str, rank: int) -> str:
    """Pod (and hostname) of node rank ``rank``: stable across gang restarts."""
    return f"{task}-node-{rank}"


def trainer_service(task: str) -> str:
    """Headless Service of the gang (pods' DNS subdomain)."""
    return task


def volcano_podgroup(task: str, attempt: int) -> str:
    """Volcano PodGroup of gang attempt ``attempt`` (tasks queued on Volcano)."""
    return f"{task}-{attempt}"


def store_claim(task: str, rank: int) -> str:
    """PVC of rank ``rank``'s trainer state (checkpoints, resume point)."""
    return f"{task}-store-{rank}"


def peers_service(vset: str) -> str:
    """Headless Service giving each replica a stable DNS name."""
    return f"{vset}-peers"


def vset_config(vset: str) -> str:
    """ConfigMap with peers.json."""
    return f"{vset}-config"


def vset_keys(vset: str) -> str:
    """Secret with the keys the set's membership was accepted with (the replicas mount it).

    Not ``<vset>-keys``: that is the name users give their own keys Secret (the example's
    ``vset-keys`` for set ``vset``), and it would collide."""
    return f"{vset}-accepted-keys"


def vset_account(vset: str) -> str:
    """ServiceAccount of the validator pods."""
    return f"{vset}-validator"


def replica_pod(vset: str, ordinal: int) -> str:
    """StatefulSet pod name of replica ``ordinal``."""
    return f"{vset}-{ordinal}"


def service_host(service: str, namespace: str, domain: str) -> str:
    """Cluster DNS name of a Service."""
    return f"{service}.{namespace}.svc.{domain}"


def owner_reference(owner: Mapping[str, Any]) -> dict[str, Any]:
    """ownerReference making ``owner`` the controller of a child (GC deletes it with the owner)."""
    meta = owner["metadata"]
    return {
        "apiVersion": owner.get("apiVersion", API_VERSION),
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def task_labels(task: str) -> dict[str, str]:
    """Labels of every object belonging to a task."""
    return {
        LABEL_NAME: "pot",
        LABEL_COMPONENT: "trainer",
        LABEL_TASK: task,
        LABEL_MANAGED_BY: MANAGER,
    }


def vset_labels(vset: str) -> dict[str, str]:
    """Labels of every object belonging to a ValidatorSet."""
    return {
        LABEL_NAME: "pot",
        LABEL_COMPONENT: "validator",
        LABEL_VSET: vset,
        LABEL_MANAGED_BY: MANAGER,
    }


def vset_selector(vset: str) -> dict[str, str]:
    """Selector of a ValidatorSet's pods."""
    return {LABEL_NAME: "pot", LABEL_COMPONENT: "validator", LABEL_VSET: vset}


def task_selector(task: str) -> dict[str, str]:
    """Selector of a task's trainer pods."""
    return {LABEL_NAME: "pot", LABEL_COMPONENT: "trainer", LABEL_TASK: task}
