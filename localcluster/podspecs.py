"""Pure translation of a Pod's containers into local process specs.

The process kubelet never pulls images (DESIGN §6): a container is its
`command`/`args` run as a local process, with `python`, `python3` and
`torchrun` resolved to this project's virtualenv so pods run the same code as
the tests. This project's images (`pot-operator`, `pot-trainer`,
`pot-validator`, any registry prefix or tag) have known entrypoints when a
container gives no command; any other image without a command is refused with
a message naming the container, because we cannot know what it would run.

Env follows the kubelet's rules: `env` in order with `$(VAR)` expanded from
earlier entries (`$$(VAR)` escapes, undefined references stay literal),
`valueFrom` for fieldRef, resourceFieldRef, secretKeyRef and configMapKeyRef,
and `envFrom`. Volume file contents (configMap, secret, downwardAPI, projected)
are computed here; the kubelet only writes them.

No I/O: ConfigMaps, Secrets and the node's allocatable come in as arguments.
"""

from __future__ import annotations

import base64
import math
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pot import errors, quantities

Obj = Mapping[str, Any]

#: image repository name -> module run when the container gives no command.
ENTRYPOINTS = {
    "pot-operator": "pot.operator",
    "pot-trainer": "pot.trainer",
    "pot-validator": "pot.validator",
}
#: Programs resolved to the virtualenv's bin/ first.
VENV_PROGRAMS = {"python", "python3", "python3.11", "torchrun", "pot", "kubectl"}


class ContainerConfigError(errors.ClusterError):
    """A container cannot be started as specified (kubelet's CreateContainerConfigError)."""


@dataclass(frozen=True, slots=True)
class Mount:
    """A bind mount inside the container's private mount namespace."""

    source: str
    target: str
    read_only: bool = False


@dataclass(slots=True)
class ProcessSpec:
    """What the kubelet needs to start one container as a process."""

    name: str
    image: str
    argv: list[str]
    env: dict[str, str]
    mounts: list[Mount] = field(default_factory=list)
    working_dir: str | None = None


def image_repository(image: str) -> str:
    """Last path component of an image reference, without tag or digest."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def entrypoint(container: Obj) -> list[str]:
    """The argv a container runs before venv resolution and $(VAR) expansion."""
    command = list(container.get("command") or [])
    args = list(container.get("args") or [])
    if command:
        return command + args
    image = container.get("image") or ""
    module = ENTRYPOINTS.get(image_repository(image))
    if module is None:
        raise ContainerConfigError(
            f"container {container.get('name')!r}: image {image!r} has no command and is not "
            f"one of this project's images ({', '.join(sorted(ENTRYPOINTS))}); the local "
            "cluster runs processes, not images: set `command`"
        )
    return ["python", "-m", module, *args]


_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined vars replaced, `$$` escapes, rest literal."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _REF.sub(sub, text)


def resolve_program(argv: list[str], venv_bin: str) -> list[str]:
    """Point python/torchrun (and anything else on the venv's bin/) at the venv."""
    if not argv:
        return argv
    program = argv[0]
    if "/" not in program:
        candidate = os.path.join(venv_bin, program)
        # The venv's bin/ comes first for every program, so python, torchrun
        # and pot always run this project's interpreter and code.
        if os.access(candidate, os.X_OK):
            return [candidate, *argv[1:]]
        found = shutil.which(program, path=f"{venv_bin}:{os.environ.get('PATH', '')}")
        if found:
            return [found, *argv[1:]]
    return argv


def _decode(secret: Obj, key: str) -> str | None:
    data = secret.get("data") or {}
    if key in data:
        return base64.b64decode(data[key]).decode("utf-8", "replace")
    string_data = secret.get("stringData") or {}
    return string_data.get(key)


def _field_ref(path: str, pod: Obj) -> str:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']*)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.hostIP": status.get("hostIP"),
        "status.podIP": status.get("podIP"),
        "status.podIPs": ",".join(p.get("ip", "") for p in status.get("podIPs") or []),
        "status.hostIPs": ",".join(p.get("ip", "") for p in status.get("hostIPs") or []),
    }
    if path in {"metadata.labels", "metadata.annotations"}:
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    if path not in simple:
        raise ContainerConfigError(f"fieldRef {path!r} is not supported")
    return str(simple[path] or "")


def _resource_ref(ref: Obj, pod: Obj, container: Obj, node_allocatable: Mapping[str, str]) -> str:
    target = container
    if ref.get("containerName"):
        all_containers = list((pod.get("spec") or {}).get("containers") or []) + list(
            (pod.get("spec") or {}).get("initContainers") or []
        )
        target = next((c for c in all_containers if c.get("name") == ref["containerName"]), {})
    kind, _, resource = str(ref.get("resource", "")).partition(".")
    if kind not in {"limits", "requests"} or not resource:
        raise ContainerConfigError(f"resourceFieldRef {ref.get('resource')!r} is not supported")
    values = (target.get("resources") or {}).get(kind) or {}
    raw = values.get(resource)
    if raw is None and kind == "limits":
        raw = node_allocatable.get(resource)  # no limit: the node's allocatable, as kubelet
    if raw is None:
        raw = "0"
    divisor = quantities.parse(ref.get("divisor") or "1")
    if divisor == 0:
        raise ContainerConfigError("resourceFieldRef divisor must not be 0")
    return str(math.ceil(quantities.parse(raw) / divisor))


def _lookup(kind: str, ref: Obj, objects: Mapping[str, Obj], container: str) -> str | None:
    name, key = ref.get("name", ""), ref.get("key", "")
    obj = objects.get(name)
    optional = bool(ref.get("optional"))
    if obj is None:
        if optional:
            return None
        raise ContainerConfigError(f"container {container!r}: {kind} {name!r} not found")
    value = _decode(obj, key) if kind == "secret" else (obj.get("data") or {}).get(key)
    if value is None and not optional:
        raise ContainerConfigError(
            f"container {container!r}: couldn't find key {key} in {kind} {name!r}"
        )
    return value


def container_env(
    pod: Obj,
    container: Obj,
    *,
    base: Mapping[str, str],
    configmaps: Mapping[str, Obj],
    secrets: Mapping[str, Obj],
    node_allocatable: Mapping[str, str],
) -> dict[str, str]:
    """The container's environment: ``base`` (PATH, HOSTNAME, ...) then envFrom then env."""
    cname = str(container.get("name"))
    env: dict[str, str] = dict(base)
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix") or ""
        if source.get("configMapRef"):
            ref = source["configMapRef"]
            obj = configmaps.get(ref.get("name", ""))
            if obj is None and not ref.get("optional"):
                raise ContainerConfigError(
                    f"container {cname!r}: configmap {ref.get('name')!r} not found"
                )
            for k, v in ((obj or {}).get("data") or {}).items():
                env[prefix + k] = v
        if source.get("secretRef"):
            ref = source["secretRef"]
            obj = secrets.get(ref.get("name", ""))
            if obj is None and not ref.get("optional"):
                raise ContainerConfigError(
                    f"container {cname!r}: secret {ref.get('name')!r} not found"
                )
            for k in (obj or {}).get("data") or {}:
                env[prefix + k] = _decode(obj or {}, k) or ""
    for item in container.get("env") or []:
        name = item.get("name", "")
        source = item.get("valueFrom")
        if source is None:
            env[name] = expand(str(item.get("value", "")), env)
            continue
        value: str | None
        if "fieldRef" in source:
            value = _field_ref(source["fieldRef"].get("fieldPath", ""), pod)
        elif "resourceFieldRef" in source:
            value = _resource_ref(source["resourceFieldRef"], pod, container, node_allocatable)
        elif "secretKeyRef" in source:
            value = _lookup("secret", source["secretKeyRef"], secrets, cname)
        elif "configMapKeyRef" in source:
            value = _lookup("configmap", source["configMapKeyRef"], configmaps, cname)
        else:
            raise ContainerConfigError(f"container {cname!r}: env {name!r} has an unknown source")
        if value is not None:
            env[name] = value
    return env


def process_spec(
    pod: Obj,
    container: Obj,
    *,
    base_env: Mapping[str, str],
    volume_dirs: Mapping[str, str],
    configmaps: Mapping[str, Obj],
    secrets: Mapping[str, Obj],
    node_allocatable: Mapping[str, str],
    venv_bin: str,
) -> ProcessSpec:
    """Everything needed to start ``container`` of ``pod`` as a local process.

    ``volume_dirs`` maps volume names to host directories the kubelet prepared.
    """
    env = container_env(
        pod,
        container,
        base=base_env,
        configmaps=configmaps,
        secrets=secrets,
        node_allocatable=node_allocatable,
    )
    argv = [expand(a, env) for a in entrypoint(container)]
    argv = resolve_program(argv, venv_bin)
    mounts = []
    for vm in container.get("volumeMounts") or []:
        vol = vm.get("name", "")
        if vol not in volume_dirs:
            raise ContainerConfigError(
                f"container {container.get('name')!r}: volumeMount {vol!r} has no volume"
            )
        target = vm.get("mountPath", "")
        if not target.startswith("/"):
            raise ContainerConfigError(f"volumeMount {vol!r}: mountPath {target!r} is not absolute")
        source = volume_dirs[vol]
        sub = vm.get("subPath") or expand(vm.get("subPathExpr") or "", env)
        if sub:
            if sub.startswith("/") or ".." in sub.split("/"):
                raise ContainerConfigError(f"volumeMount {vol!r}: subPath {sub!r} escapes")
            source = os.path.join(source, sub)
        mounts.append(Mount(source, target, bool(vm.get("readOnly"))))
    return ProcessSpec(
        name=str(container.get("name")),
        image=str(container.get("image") or ""),
        argv=argv,
        env=env,
        mounts=mounts,
        working_dir=container.get("workingDir"),
    )


def _items(source: Obj, keys: list[str]) -> list[tuple[str, str, int | None]]:
    """(key, relative path, mode) for a configMap/secret volume source."""
    if source.get("items"):
        return [(i["key"], i.get("path", i["key"]), i.get("mode")) for i in source["items"]]
    return [(k, k, None) for k in keys]


def volume_files(
    volume: Obj,
    pod: Obj,
    *,
    configmaps: Mapping[str, Obj],
    secrets: Mapping[str, Obj],
) -> dict[str, tuple[bytes, int]] | None:
    """Files (relative path -> (bytes, mode)) of a projected-content volume.

    None for volumes that are directories rather than content (emptyDir, PVC,
    hostPath); raises ContainerConfigError when a required source is missing.
    """
    sources: list[tuple[str, Obj]] = []
    default_mode = 0o644
    if "configMap" in volume:
        sources = [("configMap", volume["configMap"])]
        default_mode = volume["configMap"].get("defaultMode", 0o644)
    elif "secret" in volume:
        src = volume["secret"]
        sources = [("secret", {**src, "name": src.get("secretName", "")})]
        default_mode = src.get("defaultMode", 0o644)
    elif "downwardAPI" in volume:
        sources = [("downwardAPI", volume["downwardAPI"])]
        default_mode = volume["downwardAPI"].get("defaultMode", 0o644)
    elif "projected" in volume:
        default_mode = volume["projected"].get("defaultMode", 0o644)
        for src in volume["projected"].get("sources") or []:
            for kind in ("configMap", "secret", "downwardAPI", "serviceAccountToken"):
                if kind in src:
                    sources.append((kind, src[kind]))
    else:
        return None
    files: dict[str, tuple[bytes, int]] = {}
    for kind, src in sources:
        if kind == "serviceAccountToken":
            # Tokens are not verified by the local API server (no RBAC): any text works.
            files[src.get("path", "token")] = (b"pot-local-token", default_mode)
            continue
        if kind == "downwardAPI":
            for item in src.get("items") or []:
                if "fieldRef" in item:
                    value = _field_ref(item["fieldRef"].get("fieldPath", ""), pod)
                else:
                    value = _resource_ref(item.get("resourceFieldRef") or {}, pod, {}, {})
                files[item["path"]] = (value.encode(), item.get("mode") or default_mode)
            continue
        name = src.get("name", "")
        obj = (configmaps if kind == "configMap" else secrets).get(name)
        if obj is None:
            if src.get("optional"):
                continue
            raise ContainerConfigError(f'{kind.lower()} "{name}" not found')
        if kind == "secret":
            data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()} | {
                k: v.encode() for k, v in (obj.get("stringData") or {}).items()
            }
        else:
            data = {k: v.encode() for k, v in (obj.get("data") or {}).items()} | {
                k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()
            }
        for key, path, mode in _items(src, sorted(data)):
            if key not in data:
                if src.get("optional"):
                    continue
                raise ContainerConfigError(f'{kind.lower()} "{name}" has no key {key!r}')
            if path.startswith("/") or ".." in path.split("/"):
                raise ContainerConfigError(f"volume item path {path!r} escapes the volume")
            files[path] = (data[key], mode or default_mode)
    return files
