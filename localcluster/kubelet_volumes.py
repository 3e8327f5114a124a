"""A pod's volumes on the process kubelet: directories its containers bind-mount.

configMap, secret, downwardAPI and projected volumes get their files written
(contents from ``podspecs.volume_files``, with their modes) under the pod's
directory; a persistentVolumeClaim is a directory per claim that outlives pods
(like a local PV); a hostPath is the path itself (created for
``DirectoryOrCreate``); emptyDir and anything else a private directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pot.localcluster import podspecs

Obj = dict[str, Any]


def prepare(
    pod: Obj,
    *,
    pod_root: Path,
    claims_root: Path,
    configmaps: Mapping[str, Obj],
    secrets: Mapping[str, Obj],
) -> dict[str, str]:
    """Create ``pod``'s volumes; their host directories by volume name.

    Raises ``podspecs.ContainerConfigError`` while a ConfigMap or Secret is missing."""
    ns = pod["metadata"]["namespace"]
    dirs: dict[str, str] = {}
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        name = vol["name"]
        files = podspecs.volume_files(vol, pod, configmaps=configmaps, secrets=secrets)
        if files is not None:
            target = pod_root / name
            target.mkdir(parents=True, exist_ok=True)
            for rel, (data, mode) in files.items():
                path = target / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                path.chmod(mode)
            dirs[name] = str(target)
        elif "persistentVolumeClaim" in vol:
            target = claims_root / ns / vol["persistentVolumeClaim"]["claimName"]
            target.mkdir(parents=True, exist_ok=True)
            dirs[name] = str(target)
        elif "hostPath" in vol:
            path = Path(vol["hostPath"]["path"])
            if vol["hostPath"].get("type") in {"DirectoryOrCreate", None, ""}:
                path.mkdir(parents=True, exist_ok=True)
            dirs[name] = str(path)
        else:  # emptyDir, ephemeral and anything else: a private directory
            target = pod_root / name
            target.mkdir(parents=True, exist_ok=True)
            dirs[name] = str(target)
    return dirs
