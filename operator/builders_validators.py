"""Pure builders of a ValidatorSet's children (DESIGN §3, docs/protocol.md).

Every function returns a plain manifest dict from the ValidatorSet body and the
operator ``Config``; nothing here talks to a cluster, so each rule is unit
tested on its own (dask-kubernetes style ``build_*_spec``). The kopf shell in
``handlers`` applies them idempotently with the ValidatorSet as controller
owner, so deleting the ValidatorSet garbage-collects all of them.

Keys: the Secret ``spec.keysSecretRef`` holds ``validator-<i>.key`` for every
replica. The replicas do not mount it: when the set's membership is first
accepted the shell copies those items once into the set's own immutable Secret
``<vset>-accepted-keys`` (``build_keys_spec``), and the pods mount that. A key
later changed in the user's Secret is refused (``MembershipChanged``) and never
reaches a replica, not even one that restarts: it would not match peers.json
and could not join. A StatefulSet's pods share one template, so the Secret is
mounted only into an init container that copies this replica's own key into a
memory-backed emptyDir; the long-running containers never see the other
replicas' keys (a compromised replica must not be able to sign as another —
that would break the f-fault bound of PBFT). The Secret is mounted 0400:
readable by the replicas' uid through ``fsGroup`` (``builders_security``),
which also gives the data volume to that uid's group.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pot.operator import builders_security as security
from pot.operator import names
from pot.operator.config import Config

Body = Mapping[str, Any]

HTTP_PORT = 8080
PBFT_PORT = 7000
SETTLEMENT_PORT = 8081
CONFIG_DIR = "/etc/pot/validators"
KEYS_DIR = "/var/run/pot/keys"
KEYS_SOURCE_DIR = "/var/run/pot/keys-source"
DATA_DIR = "/var/lib/pot"


@dataclass(frozen=True, slots=True)
class Identity:
    """A replica's public identity, derived by the shell from its key (never the key)."""

    address: str
    public_key: str


def faults(replicas: int) -> int:
    """f for n = 3f+1 replicas."""
    return (replicas - 1) // 3


def _meta(vset: Body, name: str, **extra: Any) -> dict[str, Any]:
    meta = vset["metadata"]
    out: dict[str, Any] = {
        "name": name,
        "namespace": meta["namespace"],
        "labels": names.vset_labels(meta["name"]),
        "ownerReferences": [names.owner_reference(vset)],
    }
    out.update(extra)
    return out


def build_peers(vset: Body, identities: Sequence[Identity], config: Config) -> dict[str, Any]:
    """peers.json (docs/protocol.md): replicas' DNS names, ports, addresses and public keys.

    An RPC URL held in a Secret (``chain.rpcSecretRef``) is not copied into the
    ConfigMap; the settlement sidecar reads it from ``POT_CHAIN_RPC_URL``.
    """
    meta, spec = vset["metadata"], vset["spec"]
    name, ns = meta["name"], meta["namespace"]
    n = int(spec["replicas"])
    peers = names.peers_service(name)
    chain = spec["chain"]
    chain_doc: dict[str, Any] = {
        "chainId": chain["chainId"],
        "contract": chain["contract"],
        "confirmations": chain.get("confirmations", 1),
    }
    if chain.get("rpcUrl"):
        chain_doc["rpcUrl"] = chain["rpcUrl"]
    elif not chain.get("rpcSecretRef") and config.chain_rpc_url:
        chain_doc["rpcUrl"] = config.chain_rpc_url
    doc: dict[str, Any] = {
        "n": n,
        "f": faults(n),
        "replicas": [
            {
                "id": i,
                "host": f"{names.replica_pod(name, i)}.{names.service_host(peers, ns, config.cluster_domain)}",
                "pbftPort": PBFT_PORT,
                "httpPort": HTTP_PORT,
                "address": identities[i].address,
                "publicKey": identities[i].public_key,
            }
            for i in range(n)
        ],
        "chain": chain_doc,
    }
    if config.operator_address:
        doc["operator"] = config.operator_address  # the only registrations validators accept
    if spec.get("stakes"):
        doc["stakes"] = list(spec["stakes"])
    if spec.get("pbft"):
        doc["pbft"] = dict(spec["pbft"])
    return doc


def peers_json(doc: Mapping[str, Any]) -> str:
    """Canonical text of peers.json (stable, so its hash only changes with content)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def config_hash(text: str) -> str:
    """Short digest put on the pod template: a new peers.json rolls the replicas."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_configmap_spec(vset: Body, peers_text: str) -> dict[str, Any]:
    """ConfigMap ``<vset>-config`` with peers.json."""
    name = vset["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(vset, names.vset_config(name)),
        "data": {"peers.json": peers_text},
    }


def build_keys_spec(vset: Body, secret: Body) -> dict[str, Any]:
    """Secret ``<vset>-accepted-keys``: the replicas' keys as the set's membership was
    accepted, copied from the user's ``secret`` (only the n ``validator-<i>.key`` items).

    Created once and never patched (``immutable``); the set owns it, so it goes with
    the set. ``stringData`` items (which the API server folds into ``data``) are encoded.
    """
    data = secret.get("data") or {}
    text = secret.get("stringData") or {}
    items = {
        item: data[item] if item in data else base64.b64encode(str(text[item]).encode()).decode()
        for item in (f"validator-{i}.key" for i in range(int(vset["spec"]["replicas"])))
        if item in data or item in text
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(vset, names.vset_keys(vset["metadata"]["name"])),
        "type": "Opaque",
        "immutable": True,
        "data": items,
    }


def build_service_account_spec(vset: Body) -> dict[str, Any]:
    """ServiceAccount of the replicas: no API token mounted, no Role bound.

    Validators never call the Kubernetes API (they read peers.json and their key
    from volumes), so least privilege is no privilege; the dedicated account
    lets admins attach policies to validator pods alone.
    """
    name = vset["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(vset, names.vset_account(name)),
        "automountServiceAccountToken": False,
    }


def build_peers_service_spec(vset: Body) -> dict[str, Any]:
    """Headless Service ``<vset>-peers``: stable per-replica DNS for PBFT.

    ``publishNotReadyAddresses``: a replica is only ready inside a view with a
    live primary, and it cannot get there unless peers can reach it first.
    """
    name = vset["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(vset, names.peers_service(name)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": names.vset_selector(name),
            "ports": [
                {"name": "pbft", "port": PBFT_PORT, "targetPort": PBFT_PORT, "protocol": "TCP"},
                {"name": "http", "port": HTTP_PORT, "targetPort": HTTP_PORT, "protocol": "TCP"},
            ],
        },
    }


def build_client_service_spec(vset: Body) -> dict[str, Any]:
    """Service ``<vset>`` (port 8080): trainers' --validator-url, ready replicas only."""
    name = vset["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(vset, name),
        "spec": {
            "selector": names.vset_selector(name),
            "ports": [
                {"name": "http", "port": HTTP_PORT, "targetPort": HTTP_PORT, "protocol": "TCP"}
            ],
        },
    }


def build_pdb_spec(vset: Body) -> dict[str, Any]:
    """PodDisruptionBudget with maxUnavailable = f: drains never take PBFT below quorum."""
    name = vset["metadata"]["name"]
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(vset, name),
        "spec": {
            "maxUnavailable": faults(int(vset["spec"]["replicas"])),
            "selector": {"matchLabels": names.vset_selector(name)},
        },
    }


def validator_command(config: Config, verification: Mapping[str, Any] | None = None) -> list[str]:
    """The validator container's command line (docs/protocol.md), with
    ``spec.verification`` as ``--device``/``--max-concurrent``."""
    if config.validator_command is not None:
        return list(config.validator_command)
    extra: list[str] = []
    if verification:
        if verification.get("device"):
            extra += ["--device", str(verification["device"])]
        if verification.get("maxConcurrent"):
            extra += ["--max-concurrent", str(verification["maxConcurrent"])]
    return [
        "python", "-m", "pot.validator",
        "--config", f"{CONFIG_DIR}/peers.json",
        "--replica-id", "$(ORDINAL)",
        "--key-file", f"{KEYS_DIR}/validator-$(ORDINAL).key",
        "--data-dir", f"{DATA_DIR}/validator",
        *extra,
    ]  # fmt: skip


def settlement_command(config: Config) -> list[str]:
    """The settlement sidecar's command line (docs/protocol.md)."""
    if config.settlement_command is not None:
        return list(config.settlement_command)
    return [
        "python", "-m", "pot.settlement",
        "--validator-url", f"http://127.0.0.1:{HTTP_PORT}",
        "--config", f"{CONFIG_DIR}/peers.json",
        "--key-file", f"{KEYS_DIR}/validator-$(ORDINAL).key",
        "--state-dir", f"{DATA_DIR}/settlement",
    ]  # fmt: skip


# The init container runs our own image's Python: copy one item, owner-only.
_COPY_KEY = (
    "import os,shutil,sys; o=os.environ['ORDINAL']; "
    f"d='{KEYS_DIR}/validator-'+o+'.key'; "
    f"shutil.copyfile('{KEYS_SOURCE_DIR}/validator-'+o+'.key', d); os.chmod(d, 0o400)"
)


def _ordinal_env() -> list[dict[str, Any]]:
    return [
        {
            "name": "ORDINAL",
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{names.LABEL_POD_INDEX}']"}},
        },
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]


def _probe(path: str, port: int, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 2,
    }


def _names_gpu(resources: Mapping[str, Any]) -> bool:
    """Whether requests or limits name a GPU resource (nvidia.com/gpu, amd.com/gpu, ...)."""
    return any(
        str(key).endswith("/gpu")
        for part in ("limits", "requests")
        for key in (resources.get(part) or {})
    )


def build_statefulset_spec(vset: Body, config: Config, peers_text: str) -> dict[str, Any]:
    """StatefulSet ``<vset>``: validator container + settlement sidecar per replica."""
    meta, spec = vset["metadata"], vset["spec"]
    name = meta["name"]
    image = spec.get("image") or config.validator_image
    mounts = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "key", "mountPath": KEYS_DIR, "readOnly": True},
        {"name": "data", "mountPath": DATA_DIR},
    ]
    settlement_env = _ordinal_env()
    rpc_ref = spec["chain"].get("rpcSecretRef")
    if rpc_ref:
        settlement_env.append(
            {
                "name": "POT_CHAIN_RPC_URL",
                "valueFrom": {"secretKeyRef": {"name": rpc_ref["name"], "key": rpc_ref["key"]}},
            }
        )
    validator: dict[str, Any] = {
        "name": "validator",
        "image": image,
        "command": validator_command(config, spec.get("verification")),
        "env": _ordinal_env(),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "pbft", "containerPort": PBFT_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": _probe("/readyz", HTTP_PORT, 2, 3),
        "livenessProbe": _probe("/healthz", HTTP_PORT, 10, 6),
        "volumeMounts": mounts,
        "securityContext": security.container_security_context(),
    }
    # Replays on cuda need a GPU in the pod, or every audit fails (AUDIT_ERROR) and no
    # audited segment is paid: one per replica, on the operator's GPU nodes, unless the
    # set's own resources name GPUs already.
    on_gpu = (spec.get("verification") or {}).get("device") == "cuda"
    resources = dict(spec.get("resources") or {})
    if on_gpu and not _names_gpu(resources):
        resources["limits"] = {**(resources.get("limits") or {}), names.GPU: "1"}
    if resources:
        validator["resources"] = resources
    settlement: dict[str, Any] = {
        "name": "settlement",
        "image": image,
        "command": settlement_command(config),
        "env": settlement_env,
        "ports": [{"name": "settle-metrics", "containerPort": SETTLEMENT_PORT, "protocol": "TCP"}],
        "livenessProbe": _probe("/healthz", SETTLEMENT_PORT, 10, 6),
        "volumeMounts": mounts,
        "securityContext": security.container_security_context(),
    }
    keys_init = {
        "name": "key",
        "image": image,
        "command": ["python", "-c", _COPY_KEY],
        "env": _ordinal_env()[:1],
        "volumeMounts": [
            {"name": "keys-source", "mountPath": KEYS_SOURCE_DIR, "readOnly": True},
            {"name": "key", "mountPath": KEYS_DIR},
        ],
        "securityContext": security.container_security_context(),
    }
    pod_spec: dict[str, Any] = {
        "serviceAccountName": names.vset_account(name),
        "automountServiceAccountToken": False,
        # fsGroup: the 0400 keys Secret and the data claim become readable and
        # writable by the replicas' group (else only root could use them).
        "securityContext": security.pod_security_context(),
        "initContainers": [keys_init],
        "containers": [validator, settlement],
        "volumes": [
            {"name": "config", "configMap": {"name": names.vset_config(name)}},
            {
                "name": "keys-source",
                # The accepted keys, never the user's Secret: a key changed there (and
                # refused) must not reach a replica that restarts.
                "secret": {"secretName": names.vset_keys(name), "defaultMode": 0o400},
            },
            {"name": "key", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
        ],
        # Spread replicas over nodes so one rig failing costs at most one
        # replica where the farm allows it (preferred: small farms still run).
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": names.vset_selector(name)},
                        },
                    }
                ]
            }
        },
    }
    selector = dict(config.gpu_node_selector) if on_gpu else {}
    selector.update(spec.get("nodeSelector") or {})
    if selector:
        pod_spec["nodeSelector"] = selector
    tolerations = list(config.gpu_tolerations) if on_gpu else []
    tolerations += list(spec.get("tolerations") or [])
    if tolerations:
        pod_spec["tolerations"] = tolerations
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(vset, name),
        "spec": {
            "replicas": int(spec["replicas"]),
            "serviceName": names.peers_service(name),
            # PBFT needs 2f+1 replicas up before anyone is ready: start all at once.
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": names.vset_selector(name)},
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Delete",
                "whenScaled": "Retain",
            },
            "template": {
                "metadata": {
                    "labels": names.vset_labels(name),
                    "annotations": {names.ANNOTATION_CONFIG_HASH: config_hash(peers_text)},
                },
                "spec": pod_spec,
            },
            # Committed PBFT state and the settlement intent log survive restarts.
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                }
            ],
        },
    }


def build_all(vset: Body, identities: Sequence[Identity], config: Config) -> list[dict[str, Any]]:
    """Every child, in the order they are applied (config before the pods that read it)."""
    text = peers_json(build_peers(vset, identities, config))
    return [
        build_service_account_spec(vset),
        build_configmap_spec(vset, text),
        build_peers_service_spec(vset),
        build_client_service_spec(vset),
        build_pdb_spec(vset),
        build_statefulset_spec(vset, config, text),
    ]
