"""Virtual GPU nodes: the layout of the local cluster and their Node objects.

DESIGN §6: pods land on "GPU rigs" that only exist as Node objects, so the
operator's placement logic (GPU counts, products, taints) is exercised exactly
as on a real farm. The default layout is two rigs with four GPUs each; `pot
local up --nodes FILE` reads another (YAML or JSON, the fields of ``NodeConfig``
in camelCase). Labels follow NVIDIA GPU feature discovery so manifests written
for real clusters select these nodes unchanged.

Pure: builds dicts, performs no I/O except reading the layout file.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pot import errors, quantities

GPU = "nvidia.com/gpu"
#: Annotation the `pot local node fail|recover` command sets; the kubelet
#: serving the node stops (or resumes) its heartbeats and pods when it sees it.
SIMULATED_FAILURE = "localcluster.pot.dev/failed"
#: Annotation carrying the kubelet's HTTP endpoint (logs, exec), read by the
#: API server's pod proxy.
KUBELET_ENDPOINT = "localcluster.pot.dev/kubelet-endpoint"


@dataclass(kw_only=True, slots=True)
class NodeConfig:
    """One virtual node."""

    name: str
    """Node name (a DNS label)."""
    gpus: int = 4
    """Number of `nvidia.com/gpu` the node offers (0 for a CPU-only node)."""
    gpu_product: str = "NVIDIA-H100-80GB-HBM3"
    """Value of the `nvidia.com/gpu.product` label."""
    cpu: str = "32"
    """CPU capacity (a quantity)."""
    memory: str = "256Gi"
    """Memory capacity (a quantity)."""
    pods: int = 110
    """Maximum number of pods."""
    labels: dict[str, str] = field(default_factory=dict)
    """Extra labels, merged over the generated ones."""
    taints: list[dict[str, str]] = field(default_factory=list)
    """Taints as in `Node.spec.taints` (key, value, effect)."""
    virtual: bool = False
    """Kwok-like: pods bound here become Running without any process."""

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > 63:
            raise ValueError(f"node name {self.name!r} must be 1-63 characters")
        if self.gpus < 0:
            raise ValueError(f"node {self.name}: gpus must be >= 0, not {self.gpus}")
        for taint in self.taints:
            if taint.get("effect") not in {"NoSchedule", "PreferNoSchedule", "NoExecute"}:
                raise ValueError(f"node {self.name}: taint {taint} has no valid effect")


def default_layout() -> list[NodeConfig]:
    """Two 4-GPU rigs, as DESIGN §6 describes."""
    return [NodeConfig(name="gpu-rig-0"), NodeConfig(name="gpu-rig-1")]


_FIELDS = {
    "name": "name",
    "gpus": "gpus",
    "gpuProduct": "gpu_product",
    "cpu": "cpu",
    "memory": "memory",
    "pods": "pods",
    "labels": "labels",
    "taints": "taints",
    "virtual": "virtual",
}


_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def _field_problem(key: str, value: Any) -> str | None:
    """Why ``value`` cannot be the layout field ``key``, or None. A layout is typed by hand:
    a wrong type must be refused here, not crash a component later."""
    if key == "name":
        ok = isinstance(value, str) and bool(_NODE_NAME.match(value))
        return (
            None if ok else "expected a DNS label (lowercase letters, digits and '-', at most 63)"
        )
    if key in ("gpus", "pods"):
        least = 0 if key == "gpus" else 1
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= least
        return None if ok else f"expected a whole number >= {least}"
    if key in ("cpu", "memory"):
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            return "expected a resource quantity"
        try:
            ok = quantities.parse(value) > 0
        except errors.ConfigError:
            ok = False
        return None if ok else "expected a positive resource quantity (e.g. 32, 500m, 256Gi)"
    if key == "gpuProduct":
        return None if isinstance(value, str) and value else "expected a non-empty string"
    if key == "virtual":
        return None if isinstance(value, bool) else "expected true or false"
    if key == "labels":
        ok = isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        )
        return None if ok else "expected a mapping of strings to strings"
    # taints
    if not isinstance(value, list):
        return "expected a list of taints"
    for j, taint in enumerate(value):
        if not isinstance(taint, dict) or not isinstance(taint.get("key"), str):
            return f"[{j}]: expected a mapping with a string key"
        if taint.get("effect") not in _EFFECTS:
            return f"[{j}].effect: expected one of {', '.join(_EFFECTS)}"
        if not isinstance(taint.get("value", ""), str):
            return f"[{j}].value: expected a string"
    return None


def parse_layout(doc: Any, *, source: str = "nodes") -> list[NodeConfig]:
    """Node configs from a parsed layout: ``{"nodes": [...]}`` or a bare list."""
    items = doc.get("nodes") if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not items:
        raise errors.ConfigError(f"{source}: expected a non-empty list under 'nodes'")
    configs: list[NodeConfig] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise errors.ConfigError(f"{source}: nodes[{i}] is not a mapping")
        unknown = set(item) - set(_FIELDS)
        if unknown:
            raise errors.ConfigError(f"{source}: nodes[{i}] has unknown field(s) {sorted(unknown)}")
        if "name" not in item:
            raise errors.ConfigError(f"{source}: nodes[{i}].name is required")
        for key, value in item.items():
            if (problem := _field_problem(key, value)) is not None:
                sep = "" if problem.startswith("[") else ": "
                raise errors.ConfigError(f"{source}: nodes[{i}].{key}{sep}{problem}, not {value!r}")
        fields = {_FIELDS[k]: v for k, v in item.items()}
        for key in ("cpu", "memory"):
            if key in fields:
                fields[key] = str(fields[key])
        try:
            configs.append(NodeConfig(**fields))
        except (TypeError, ValueError) as exc:
            raise errors.ConfigError(f"{source}: nodes[{i}]: {exc}") from exc
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise errors.ConfigError(f"{source}: node names are not unique: {names}")
    return configs


def load_layout(path: Path | None) -> list[NodeConfig]:
    """The layout in ``path`` (YAML or JSON), or the default one."""
    if path is None:
        return default_layout()
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise errors.ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    except UnicodeDecodeError:
        raise errors.ConfigError(f"{path}: not a text file (a YAML or JSON layout)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "unreadable"
        raise errors.ConfigError(f"{path}: not valid YAML ({problem}{where})") from None
    return parse_layout(doc, source=str(path))


def dump_layout(configs: list[NodeConfig]) -> str:
    """JSON for ``configs`` that ``parse_layout`` reads back."""
    back = {v: k for k, v in _FIELDS.items()}
    return json.dumps(
        {"nodes": [{back[k]: v for k, v in dataclasses.asdict(c).items()} for c in configs]}
    )


def capacity(config: NodeConfig) -> dict[str, str]:
    """Capacity (== allocatable: nothing is reserved for system daemons here)."""
    out = {
        "cpu": config.cpu,
        "memory": config.memory,
        "pods": str(config.pods),
        "ephemeral-storage": "100Gi",
    }
    if config.gpus:
        out[GPU] = str(config.gpus)
    return out


def labels(config: NodeConfig) -> dict[str, str]:
    """Well-known node labels plus GPU feature discovery's."""
    out = {
        "kubernetes.io/hostname": config.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": "pot-local",
        "localcluster.pot.dev/virtual": "true" if config.virtual else "false",
    }
    if config.gpus:
        out |= {
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": config.gpu_product,
            "nvidia.com/gpu.count": str(config.gpus),
        }
    if config.virtual:
        out["type"] = "kwok"
    return out | config.labels


def node_object(config: NodeConfig) -> dict[str, Any]:
    """The Node the kubelet registers for ``config`` (status filled by ``ready_status``)."""
    spec: dict[str, Any] = {}
    if config.taints:
        spec["taints"] = [dict(t) for t in config.taints]
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": config.name, "labels": labels(config)},
        "spec": spec,
    }


def ready_status(
    config: NodeConfig, *, now: str, ready: bool, since: str, address: str
) -> dict[str, Any]:
    """Node ``status``: capacity and a Ready condition heartbeated at ``now``."""
    cap = capacity(config)
    condition = {
        "type": "Ready",
        "status": "True" if ready else "False",
        "reason": "KubeletReady" if ready else "KubeletNotReady",
        "message": "kubelet is posting ready status" if ready else "kubelet stopped",
        "lastHeartbeatTime": now,
        "lastTransitionTime": since,
    }
    pressure = [
        {
            "type": t,
            "status": "False",
            "reason": f"KubeletHas{r}",
            "message": "",
            "lastHeartbeatTime": now,
            "lastTransitionTime": since,
        }
        for t, r in (
            ("MemoryPressure", "SufficientMemory"),
            ("DiskPressure", "NoDiskPressure"),
            ("PIDPressure", "SufficientPID"),
        )
    ]
    return {
        "capacity": cap,
        "allocatable": dict(cap),
        "conditions": [*pressure, condition],
        "addresses": [
            {"type": "InternalIP", "address": address},
            {"type": "Hostname", "address": config.name},
        ],
        "nodeInfo": {
            "kubeletVersion": "v1.37.0-pot",
            "containerRuntimeVersion": "pot-process://1",
            "operatingSystem": "linux",
            "architecture": "amd64",
            "osImage": "pot local cluster",
            "kernelVersion": "",
            "kubeProxyVersion": "",
            "machineID": config.name,
            "systemUUID": config.name,
            "bootID": config.name,
        },
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "phase": "Running",
    }
