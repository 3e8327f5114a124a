"""The operator's one typed configuration, read from the environment.

Why one object: every image, timeout and default the operator applies to the
pods it creates is decided here, so the Helm chart (which sets these variables,
see charts/pot-operator/templates/deployment.yaml) and the tests (which swap
the real trainer/validator command lines for small stand-ins) change behaviour
in one place. The builders take this object; they never read the environment.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from pot import errors

StoreVolume = Literal["hostPath", "pvc", "emptyDir"]
STORE_VOLUMES = ("hostPath", "pvc", "emptyDir")


@dataclass(kw_only=True, slots=True)
class Config:
    """Operator settings. Every field has a production default."""

    trainer_image: str = "pot-trainer:0.1.0"
    """Image of trainer pods (a task's ``spec.resources.image`` overrides it)."""
    validator_image: str = "pot-validator:0.1.0"
    """Default image of validator pods (a ValidatorSet's ``spec.image`` overrides it)."""
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means the whole cluster."""
    cluster_domain: str = "cluster.local"
    """DNS suffix of Services (``<svc>.<ns>.svc.<domain>``)."""
    nccl_socket_ifname: str = "eth0"
    """Default NCCL_SOCKET_IFNAME (a task's ``spec.nccl.socketIfname`` wins)."""
    nccl_ib_disable: bool = True
    """Default NCCL_IB_DISABLE: mining rigs have no InfiniBand."""
    nccl_p2p_disable: bool = True
    """Default NCCL_P2P_DISABLE: GPU peer-to-peer is unreliable over PCIe risers."""
    gpu_node_selector: dict[str, str] = field(default_factory=dict)
    """nodeSelector added to GPU trainer pods (the task's own selector wins per key)."""
    gpu_tolerations: list[dict[str, Any]] = field(default_factory=list)
    """Tolerations added to GPU trainer pods."""
    chain_rpc_url: str = ""
    """RPC URL for ValidatorSets that name neither ``rpcUrl`` nor ``rpcSecretRef``."""
    operator_key_file: str = ""
    """The key task registrations are signed with (``POT_OPERATOR_KEY_FILE``, a mounted
    Secret); empty: unsigned, which only ValidatorSets naming no operator accept."""
    operator_address: str = ""
    """That key's address, set once it is loaded: each peers.json names it as ``operator``."""
    store_volume: StoreVolume = "hostPath"
    """Trainer state volume (checkpoints, unacknowledged segments, resume point).

    ``hostPath`` (default): a directory per task UID and node rank under
    ``store_host_dir`` on the node's own disk. It outlives the pod, so a gang
    restarted after a member failed resumes from the last checkpoint of any node
    that kept its state; it costs no API object, and it never pins a rank to a
    node (a local-disk PVC binds to its first node, so after losing that node the
    rank could never be scheduled again: the common case on mining farms, which
    have no network storage). ``pvc``: one PersistentVolumeClaim per rank, for
    clusters with network storage (needs no hostPath, which Pod Security
    ``baseline`` forbids). ``emptyDir``: state dies with the pod (tests)."""
    store_host_dir: str = "/var/lib/pot/tasks"
    """Node directory holding ``<task uid>/rank-<r>`` trainer state (``hostPath``)."""
    store_size: str = "10Gi"
    """Size of each trainer state PVC."""
    storage_class: str | None = None
    """StorageClass of trainer PVCs (None: the cluster default)."""
    trainer_command: list[str] | None = None
    """Replaces the trainer's command line (tests use small stand-ins)."""
    validator_command: list[str] | None = None
    """Replaces the validator container's command line."""
    settlement_command: list[str] | None = None
    """Replaces the settlement sidecar's command line."""
    stake_check: bool = True
    """Admit a task only once every miner's active stake on its ValidatorSet's chain covers
    ``reward.minerStake`` (``operator/stakes.py``). Off only for stacks without a chain:
    the tests' and the bench's stand-ins (``POT_STAKE_CHECK=0``). Test-only: the chart
    has no value that sets it, and the operator logs a WARNING at start when it is off."""
    validator_url: str = ""
    """Send every validator API call to this base URL instead of the replicas' pod
    IPs (tests and the bench run a stand-in; production leaves it empty)."""
    ref_grace: float = 30.0
    """Seconds a task waits for a missing ValidatorSet or miner-keys Secret to
    appear before it fails (``kubectl apply -f dir/`` may create the task first)."""
    workers: int = 8
    """Reconciles running at once (different objects; one object never twice at once)."""
    poll_interval: float = 5.0
    """Seconds between polls of validators' status and task progress."""
    progress_interval: float = 15.0
    """Seconds between two reads of one task's progress from the validators."""
    gang_timeout: float = 120.0
    """Seconds a released gang may stay partly unscheduled before it is taken down
    and regated (another scheduler took the capacity we counted on)."""
    http_timeout: float = 5.0
    """Seconds for one request to a validator."""
    leader_election: bool = True
    """Act only while holding the Lease below (off: a single replica, e.g. tests)."""
    lease_name: str = "pot-operator"
    """coordination.k8s.io Lease that elects the active replica."""
    lease_namespace: str = "default"
    """Namespace of that Lease (the operator's own)."""
    lease_duration: float = 15.0
    """Seconds a leader's lease lasts without renewal."""
    identity: str = ""
    """This replica's name in the Lease (default: the pod name or host name)."""
    metrics_port: int = 8080
    """Port of /metrics and /healthz."""

    def __post_init__(self) -> None:
        if self.store_volume not in STORE_VOLUMES:
            raise ValueError(
                f"store_volume must be one of {', '.join(STORE_VOLUMES)}, not {self.store_volume!r}"
            )
        if not self.store_host_dir.startswith("/"):
            raise ValueError(
                f"store_host_dir must be an absolute path, not {self.store_host_dir!r}"
            )
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.ref_grace < 0:
            raise ValueError("ref_grace must not be negative")
        for name in (
            "poll_interval",
            "progress_interval",
            "gang_timeout",
            "http_timeout",
            "lease_duration",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


_N = TypeVar("_N", int, float)

_ENV_OF = {
    "store_volume": "POT_TRAINER_STORE",
    "store_host_dir": "POT_TRAINER_STORE_HOST_DIR",
    "workers": "POT_WORKERS",
    "ref_grace": "POT_REF_GRACE",
    "poll_interval": "POT_POLL_INTERVAL",
    "progress_interval": "POT_PROGRESS_INTERVAL",
    "gang_timeout": "POT_GANG_TIMEOUT",
    "http_timeout": "POT_HTTP_TIMEOUT",
    "lease_duration": "POT_LEASE_DURATION",
}
"""The variable ``from_env`` reads each checked field from."""


def _number(value: str | None, name: str, default: _N, kind: type[_N]) -> _N:
    if value is None or not value.strip():
        return default
    try:
        number = kind(value.strip())
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise errors.ConfigError(f"{name}={value!r}: expected {what}") from None
    if not math.isfinite(number):
        raise errors.ConfigError(f"{name}={value!r}: expected a finite number")
    return number


def _bool(value: str, name: str) -> bool:
    low = value.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off", ""}:
        return False
    raise errors.ConfigError(f"{name}={value!r}: expected a boolean (1/0, true/false)")


def _json(value: str, name: str, kind: type) -> Any:
    try:
        parsed = json.loads(value) if value.strip() else kind()
    except json.JSONDecodeError as exc:
        raise errors.ConfigError(f"{name}: not valid JSON ({exc.msg})") from None
    if not isinstance(parsed, kind):
        raise errors.ConfigError(f"{name}: expected a JSON {kind.__name__}")
    return parsed


def _command(value: str | None, name: str) -> list[str] | None:
    if value is None or not value.strip():
        return None
    parsed = _json(value, name, list)
    if not all(isinstance(a, str) for a in parsed):
        raise errors.ConfigError(f"{name}: expected a JSON list of strings")
    return list(parsed)


def from_env(env: Mapping[str, str] | None = None) -> Config:
    """Read ``POT_*`` variables (as the Helm chart sets them); ConfigError names the bad one."""
    env = os.environ if env is None else env
    get = env.get
    try:
        return Config(
            trainer_image=get("POT_TRAINER_IMAGE") or "pot-trainer:0.1.0",
            validator_image=get("POT_VALIDATOR_IMAGE") or "pot-validator:0.1.0",
            namespaces=tuple(n for n in (get("POT_WATCH_NAMESPACES") or "").split(",") if n),
            cluster_domain=get("POT_CLUSTER_DOMAIN") or "cluster.local",
            nccl_socket_ifname=get("POT_NCCL_SOCKET_IFNAME") or "eth0",
            nccl_ib_disable=_bool(get("POT_NCCL_IB_DISABLE", "1"), "POT_NCCL_IB_DISABLE"),
            nccl_p2p_disable=_bool(get("POT_NCCL_P2P_DISABLE", "1"), "POT_NCCL_P2P_DISABLE"),
            gpu_node_selector=_json(
                get("POT_GPU_NODE_SELECTOR", ""), "POT_GPU_NODE_SELECTOR", dict
            ),
            gpu_tolerations=_json(get("POT_GPU_TOLERATIONS", ""), "POT_GPU_TOLERATIONS", list),
            chain_rpc_url=get("POT_CHAIN_RPC_URL", ""),
            operator_key_file=get("POT_OPERATOR_KEY_FILE", ""),
            store_volume=get("POT_TRAINER_STORE") or "hostPath",  # type: ignore[arg-type]
            store_host_dir=get("POT_TRAINER_STORE_HOST_DIR") or "/var/lib/pot/tasks",
            store_size=get("POT_TRAINER_STORE_SIZE") or "10Gi",
            storage_class=get("POT_STORAGE_CLASS") or None,
            trainer_command=_command(get("POT_TRAINER_COMMAND"), "POT_TRAINER_COMMAND"),
            validator_command=_command(get("POT_VALIDATOR_COMMAND"), "POT_VALIDATOR_COMMAND"),
            settlement_command=_command(get("POT_SETTLEMENT_COMMAND"), "POT_SETTLEMENT_COMMAND"),
            stake_check=_bool(get("POT_STAKE_CHECK", "1"), "POT_STAKE_CHECK"),
            validator_url=get("POT_VALIDATOR_URL", ""),
            ref_grace=_number(get("POT_REF_GRACE"), "POT_REF_GRACE", 30.0, float),
            workers=_number(get("POT_WORKERS"), "POT_WORKERS", 8, int),
            poll_interval=_number(get("POT_POLL_INTERVAL"), "POT_POLL_INTERVAL", 5.0, float),
            progress_interval=_number(
                get("POT_PROGRESS_INTERVAL"), "POT_PROGRESS_INTERVAL", 15.0, float
            ),
            gang_timeout=_number(get("POT_GANG_TIMEOUT"), "POT_GANG_TIMEOUT", 120.0, float),
            http_timeout=_number(get("POT_HTTP_TIMEOUT"), "POT_HTTP_TIMEOUT", 5.0, float),
            leader_election=_bool(get("POT_LEADER_ELECTION", "1"), "POT_LEADER_ELECTION"),
            lease_name=get("POT_LEASE_NAME") or "pot-operator",
            lease_namespace=get("POT_LEASE_NAMESPACE") or get("POD_NAMESPACE") or "default",
            lease_duration=_number(get("POT_LEASE_DURATION"), "POT_LEASE_DURATION", 15.0, float),
            identity=get("POD_NAME") or f"{os.uname().nodename}-{os.getpid()}",
            metrics_port=_number(get("POT_METRICS_PORT"), "POT_METRICS_PORT", 8080, int),
        )
    except ValueError as exc:
        # Config's checks name its fields; say which variable set the field.
        message = str(exc)
        field_name = message.split(" ", 1)[0]
        if field_name in _ENV_OF:
            message = f"{_ENV_OF[field_name]}: {message}"
        raise errors.ConfigError(f"operator configuration: {message}") from None
