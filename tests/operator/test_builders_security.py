"""Pod security of what the operator builds: non-root as the images' uid, no
privileges, volumes readable through fsGroup, and a hostPath store handed to
the trainer's uid before the trainer starts."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pot.operator import builders_security as sec
from pot.operator import builders_trainers as bt
from pot.operator import builders_validators as bv
from pot.operator import gang
from pot.operator.config import Config

POD_SC = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "fsGroup": 65532,
    "fsGroupChangePolicy": "OnRootMismatch",
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SC = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def _pod(task: dict[str, Any], store: str = "hostPath") -> dict[str, Any]:
    spec: dict[str, Any] = bt.build_pod_spec(task, 1, 0, Config(store_volume=store))["spec"]  # type: ignore[arg-type]
    return spec


def _validator_pod(vset: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = bv.build_statefulset_spec(vset, Config(), "{}")["spec"]["template"][
        "spec"
    ]
    return spec


def _restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What Pod Security ``restricted`` (v1.30) would refuse in a pod spec."""
    out: list[str] = []
    psc = pod.get("securityContext") or {}
    for vol in pod.get("volumes") or []:
        kinds = set(vol) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            out.append(f"volume {vol['name']}: {sorted(kinds)}")
    for c in (pod.get("initContainers") or []) + pod["containers"]:
        sc = c.get("securityContext") or {}
        name = c["name"]
        if not sc.get("runAsNonRoot", psc.get("runAsNonRoot")):
            out.append(f"{name}: runAsNonRoot")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            out.append(f"{name}: runAsUser 0")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{name}: capabilities.drop")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: capabilities.add")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in {"RuntimeDefault", "Localhost"}:
            out.append(f"{name}: seccompProfile")
    return out


@pytest.mark.parametrize("store", ["hostPath", "pvc", "emptyDir"])
def test_trainer_pod_runs_as_the_image_user_without_privileges(
    task: dict[str, Any], store: str
) -> None:
    pod = _pod(task, store)
    assert pod["securityContext"] == POD_SC
    (trainer,) = pod["containers"]
    assert trainer["securityContext"] == CONTAINER_SC
    # The miner key stays owner-only: fsGroup is what lets uid 65532 read it.
    (key,) = [v for v in pod["volumes"] if v["name"] == "miner-key"]
    assert key["secret"]["defaultMode"] == 0o400


def test_gpu_trainer_is_non_root_too(gpu_task: dict[str, Any]) -> None:
    """The device plugin hands the GPUs over; no root or capability needed for them."""
    pod = _pod(gpu_task)
    assert pod["securityContext"] == POD_SC
    assert pod["containers"][0]["securityContext"] == CONTAINER_SC
    (init,) = pod["initContainers"]
    assert "nvidia.com/gpu" not in init["resources"]["limits"]


def test_hostpath_store_is_handed_to_the_trainer_uid_first(task: dict[str, Any]) -> None:
    pod = _pod(task, "hostPath")
    (init,) = pod["initContainers"]
    trainer = pod["containers"][0]
    assert init["name"] == sec.STATE_OWNER_INIT
    assert init["image"] == trainer["image"]  # no extra image to pull
    assert init["volumeMounts"] == [{"name": "state", "mountPath": bt.STATE_DIR}]
    assert init["command"][:2] == ["python", "-c"]
    assert init["command"][3:] == [bt.STATE_DIR, "65532", "65532"]
    # Root, but only to chown: every other capability dropped, no escalation.
    assert init["securityContext"] == {
        "runAsNonRoot": False,
        "runAsUser": 0,
        "runAsGroup": 0,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
    }
    # The restricted check flags exactly the hostPath and this one container.
    assert sorted(_restricted_violations(pod)) == [
        f"{sec.STATE_OWNER_INIT}: capabilities.add",
        f"{sec.STATE_OWNER_INIT}: runAsNonRoot",
        f"{sec.STATE_OWNER_INIT}: runAsUser 0",
        "volume state: ['hostPath']",
    ]


@pytest.mark.parametrize("fixture", ["task", "gpu_task"])
def test_owner_init_changes_neither_the_gang_fit_nor_qos(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    task = request.getfixturevalue(fixture)
    with_init, without = _pod(task, "hostPath"), _pod(task, "emptyDir")
    assert gang.pod_requests({"spec": with_init}) == gang.pod_requests({"spec": without})
    # Guaranteed QoS needs requests == limits for cpu and memory in every container.
    for c in with_init["initContainers"] + with_init["containers"]:
        res = c["resources"]
        assert {k: res["requests"][k] for k in ("cpu", "memory")} == {
            k: res["limits"][k] for k in ("cpu", "memory")
        }


@pytest.mark.parametrize("store", ["pvc", "emptyDir"])
def test_other_stores_need_no_init_and_meet_restricted(task: dict[str, Any], store: str) -> None:
    pod = _pod(task, store)
    assert "initContainers" not in pod
    assert _restricted_violations(pod) == []


def test_validator_pods_are_non_root_with_fsgroup_for_their_volumes(
    vset: dict[str, Any],
) -> None:
    pod = _validator_pod(vset)
    assert pod["securityContext"] == POD_SC
    containers = {c["name"]: c for c in pod["initContainers"] + pod["containers"]}
    assert set(containers) == {"key", "validator", "settlement"}
    for c in containers.values():
        assert c["securityContext"] == CONTAINER_SC, c["name"]
    assert _restricted_violations(pod) == []


def test_settlement_sidecar_with_rpc_secret_keeps_its_security(vset: dict[str, Any]) -> None:
    vset["spec"]["chain"] = {**vset["spec"]["chain"], "rpcSecretRef": {"name": "r", "key": "u"}}
    vset["spec"]["chain"].pop("rpcUrl", None)
    pod = _validator_pod(vset)
    (settlement,) = [c for c in pod["containers"] if c["name"] == "settlement"]
    assert settlement["securityContext"] == CONTAINER_SC


def test_pod_uid_matches_every_image(repo_root: Path) -> None:
    for dockerfile in sorted((repo_root / "images").glob("*.Dockerfile")):
        users = re.findall(r"^USER\s+(\S+)\s*$", dockerfile.read_text(), re.M)
        assert users[-1] == f"{sec.IMAGE_UID}:{sec.IMAGE_GID}", dockerfile.name
    trainer = (repo_root / "images" / "trainer.Dockerfile").read_text()
    assert f"useradd --uid {sec.IMAGE_UID}" in trainer


def test_operator_chart_runs_as_the_same_uid(repo_root: Path) -> None:
    text = (repo_root / "charts" / "pot-operator" / "templates" / "deployment.yaml").read_text()
    for key in ("runAsUser", "runAsGroup", "fsGroup"):
        assert re.search(rf"^\s+{key}: {sec.IMAGE_UID}$", text, re.M), key


# -- the init container's program, run here ---------------------------------


@pytest.fixture
def store_dir() -> Iterator[Path]:
    # Not under pytest's tmp_path: that is 0700, and one case runs as nobody.
    path = Path(tempfile.mkdtemp(prefix="pot-store-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _python_for(user: int | None) -> str | None:
    """A Python that ``user`` may execute (the venv may sit under a private home)."""
    if user is None:
        return sys.executable
    for candidate in (sys.executable, "/usr/bin/python3", shutil.which("python3")):
        if not candidate:
            continue
        try:
            subprocess.run([candidate, "-c", "pass"], user=user, check=True, capture_output=True)
        except (OSError, subprocess.CalledProcessError):
            continue
        return candidate
    return None


def _hand_over(
    task: dict[str, Any], path: Path, user: int | None = None
) -> subprocess.CompletedProcess[str]:
    (init,) = _pod(task, "hostPath")["initContainers"]
    python = _python_for(user)
    if python is None:
        pytest.skip(f"no Python that uid {user} may run")
    argv = [python, "-c", init["command"][2], str(path), *init["command"][4:]]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, user=user, check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")
def test_owner_init_gives_the_directory_to_the_trainer_uid(
    task: dict[str, Any], store_dir: Path
) -> None:
    target = store_dir / "rank-1"
    target.mkdir(mode=0o755)
    done = _hand_over(task, target)
    assert done.returncode == 0, done.stderr
    st = target.stat()
    assert (st.st_uid, st.st_gid) == (65532, 65532)
    assert _hand_over(task, target).returncode == 0  # idempotent: a restarted gang


@pytest.mark.skipif(os.geteuid() != 0, reason="switches to nobody, which needs root")
def test_owner_init_unprivileged_accepts_only_a_writable_directory(
    task: dict[str, Any], store_dir: Path
) -> None:
    nobody = 65534
    writable = store_dir / "mine"
    writable.mkdir()
    os.chown(writable, nobody, nobody)
    done = _hand_over(task, writable, user=nobody)
    assert done.returncode == 0, done.stderr
    assert "not root" in done.stdout
    assert writable.stat().st_uid == nobody
    locked = store_dir / "roots"
    locked.mkdir(mode=0o755)
    done = _hand_over(task, locked, user=nobody)
    assert done.returncode == 1
    assert f"cannot give {locked} to 65532:65532" in done.stderr


def test_owner_init_as_this_user(task: dict[str, Any], store_dir: Path) -> None:
    """Whoever runs the tests (the local cluster's case when not root): never fails
    on a directory this user owns, and leaves it usable."""
    done = _hand_over(task, store_dir)
    assert done.returncode == 0, done.stderr
    assert os.access(store_dir, os.W_OK) or store_dir.stat().st_uid == 65532
