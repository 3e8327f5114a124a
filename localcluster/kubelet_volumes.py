"""A pod's volumes on the process kubelet: directories its containers bind-mount.

configMap, secret, downwardAPI and projected volumes get their files written
(contents from ``podspecs.volume_files``, with their modes) under the pod's
directory; a persistentVolumeClaim is a directory per claim that outlives pods
(like a local PV); a hostPath is the path itself, file or directory (created
for ``DirectoryOrCreate`` and ``FileOrCreate``, checked for the other types);
emptyDir and anything else a private directory.
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
            dirs[name] = _host_path(vol["hostPath"])
        else:  # emptyDir, ephemeral and anything else: a private directory
            target = pod_root / name
            target.mkdir(parents=True, exist_ok=True)
            dirs[name] = str(target)
    return dirs


def _host_path(source: Obj) -> str:
    """Check (or create) a hostPath as its ``type`` says; Kubernetes' FailedMount otherwise."""
    path = Path(source["path"])
    kind = source.get("type") or ""
    if kind == "FileOrCreate" and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o644)
    elif kind in {"DirectoryOrCreate", ""} and not path.exists():
        # "" checks nothing on Kubernetes; a bind mount needs something there.
        path.mkdir(parents=True, exist_ok=True)
    elif kind in {"Directory", "DirectoryOrCreate"} and not path.is_dir():
        raise podspecs.ContainerConfigError(
            f"hostPath type check failed: {path} is not a directory"
        )
    elif kind in {"File", "FileOrCreate"} and not path.is_file():
        raise podspecs.ContainerConfigError(f"hostPath type check failed: {path} is not a file")
    elif kind in {"Socket", "CharDevice", "BlockDevice"} and not path.exists():
        raise podspecs.ContainerConfigError(f"hostPath type check failed: {path} does not exist")
    return str(path)
