"""Fixtures of the operator tests: example bodies (examples/ with metadata) and nodes."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from pot import schemas

ROOT = Path(__file__).resolve().parents[2]


def _crd(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "crds" / f"{name}.yaml").read_text())


def example(
    file: str, *, name: str | None = None, ns: str = "default", uid: str = "uid-1"
) -> dict[str, Any]:
    """An example object, defaulted by its CRD schema as the API server would."""
    doc = yaml.safe_load((ROOT / "examples" / file).read_text())
    kind = doc["kind"]
    crd = _crd("trainingtask" if kind == "TrainingTask" else "validatorset")
    doc = schemas.default(schemas.crd_schema(crd, "v1alpha1"), copy.deepcopy(doc))
    doc["metadata"].update(
        name=name or doc["metadata"]["name"],
        namespace=ns,
        uid=uid,
        generation=1,
        resourceVersion="1",
        creationTimestamp="2026-01-01T00:00:00Z",
    )
    return doc


def node(
    name: str,
    gpus: int = 4,
    *,
    cpu: str = "32",
    memory: str = "256Gi",
    ready: bool = True,
    **labels: str,
) -> dict[str, Any]:
    """A Node object as the local cluster's virtual rigs look."""
    return {
        "metadata": {"name": name, "labels": {"nvidia.com/gpu.present": "true", **labels}},
        "spec": {},
        "status": {
            "allocatable": {
                "cpu": cpu,
                "memory": memory,
                "nvidia.com/gpu": str(gpus),
                "pods": "110",
            },
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


@pytest.fixture
def make_example() -> Any:
    """``make_example(file, name=..., ns=...)``: a defaulted example object."""
    return example


@pytest.fixture
def make_node() -> Any:
    """``make_node(name, gpus, ...)``: a Node body."""
    return node


# -- the local cluster (issues 3-4) and the operator under KopfRunner ------------------

STANDINS = ROOT / "tests" / "operator"


def standin_env(**extra: str) -> dict[str, str]:
    """Operator settings that swap the real processes for the stand-ins in this folder."""
    import json

    env = {
        # Trainer state (hostPath) on the "nodes' disks" next to the cluster.
        "POT_TRAINER_STORE_HOST_DIR": str(
            Path(extra["KUBECONFIG"]).resolve().parent / "node-disks"
        ),
        "POT_LEADER_ELECTION": "0",
        "POT_METRICS_PORT": "0",
        "POT_POLL_INTERVAL": "0.5",
        "POT_REF_GRACE": "1",
        "POT_GANG_TIMEOUT": "30",
        "POT_HTTP_TIMEOUT": "2",
        # The example ValidatorSet's chain does not exist here (the settlement sidecars are
        # stand-ins too): no stake can be read at admission. test_stakes runs the check
        # against a dev chain.
        "POT_STAKE_CHECK": "0",
        "POT_VALIDATOR_COMMAND": json.dumps(
            ["python", str(STANDINS / "standin_validator.py"), "8080"]
        ),
        "POT_SETTLEMENT_COMMAND": json.dumps(
            ["python", str(STANDINS / "standin_validator.py"), "8081"]
        ),
        "POT_TRAINER_COMMAND": json.dumps(["python", str(STANDINS / "standin_trainer.py")]),
    }
    env.update(extra)
    return env


class LocalCluster:
    """A local cluster in a temporary directory, driven through the kubernetes client."""

    def __init__(self, directory: Path) -> None:
        import warnings

        from kubernetes import client, config

        from pot.localcluster import launching

        self.directory = directory
        with warnings.catch_warnings():
            # launching.up drops the Popen handles of the processes it leaves running.
            warnings.simplefilter("ignore", ResourceWarning)
            self.kubeconfig, _ = launching.up(directory)
        api_client = config.new_client_from_config(str(self.kubeconfig))
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.api_client = api_client

    def kubectl(self, *args: str, input: str | None = None) -> str:
        import os
        import subprocess

        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        proc = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "kubectl"), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        if proc.returncode:
            raise AssertionError(f"kubectl {' '.join(args)}: {proc.stderr}")
        return proc.stdout

    def namespace(self, name: str) -> str:
        self.kubectl("create", "namespace", name)
        self.kubectl("apply", "-n", name, "-f", str(ROOT / "examples" / "dev-keys.yaml"))
        return name

    def pods(self, ns: str, selector: str = "") -> list[Any]:
        return list(self.core.list_namespaced_pod(ns, label_selector=selector).items)

    def task(self, ns: str, name: str) -> dict[str, Any]:
        return dict(
            self.custom.get_namespaced_custom_object(
                "pot.dev", "v1alpha1", ns, "trainingtasks", name
            )
        )

    def vset(self, ns: str, name: str = "vset") -> dict[str, Any]:
        return dict(
            self.custom.get_namespaced_custom_object(
                "pot.dev", "v1alpha1", ns, "validatorsets", name
            )
        )

    def apply_task(
        self,
        ns: str,
        name: str,
        *,
        file: str = "task.yaml",
        annotations: dict[str, str] | None = None,
        **changes: Any,
    ) -> None:
        doc = yaml.safe_load((ROOT / "examples" / file).read_text())
        doc["metadata"]["name"] = name
        if annotations:
            doc["metadata"]["annotations"] = annotations
        for path, value in changes.items():
            node: Any = doc["spec"]
            keys = path.split("__")
            for key in keys[:-1]:
                node = node.setdefault(key, {})
            node[keys[-1]] = value
        self.custom.create_namespaced_custom_object("pot.dev", "v1alpha1", ns, "trainingtasks", doc)

    def down(self) -> None:
        from pot.localcluster import launching

        self.api_client.close()
        launching.down(self.directory)


def gpu_holder(name: str, rig: str, gpus: int = 3) -> dict[str, Any]:
    """A pod that sleeps on node ``rig`` holding ``gpus`` of its GPUs (capacity tests)."""
    return {
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": rig},
            "containers": [
                {
                    "name": "c",
                    "image": "busy",
                    "command": ["sleep", "600"],
                    "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                }
            ],
        },
    }


def wait_for(what: str, check: Any, timeout: float = 60.0, interval: float = 0.3) -> Any:
    """Poll ``check()`` until it returns something truthy; AssertionError naming ``what``."""
    import time

    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A fresh local cluster (two 4-GPU rigs) with the CRDs installed."""
    lc = LocalCluster(tmp_path_factory.mktemp("opcluster"))
    try:
        lc.kubectl("apply", "-f", str(ROOT / "crds"))
        wait_for("two ready nodes", lambda: len(lc.core.list_node().items) == 2)
        yield lc
    finally:
        lc.down()


@pytest.fixture(scope="module")
def operator(cluster: Any) -> Any:
    """The operator (python -m pot.operator's handlers) under kopf's KopfRunner."""
    yield from kopf_operator(standin_env(KUBECONFIG=str(cluster.kubeconfig)))


def kopf_operator(env: dict[str, str], namespaces: tuple[str, ...] = ()) -> Iterator[Any]:
    """Run the operator's handlers under kopf's KopfRunner with ``env`` set for its
    lifetime (a generator for fixtures: ``yield from kopf_operator(env)``); kopf
    watches ``namespaces`` (``-n``, as ``python -m pot.operator`` with
    POT_WATCH_NAMESPACES), or the whole cluster when none."""
    import os

    from kopf.testing import KopfRunner

    scope = [a for ns in namespaces for a in ("-n", ns)] or ["-A"]
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        with KopfRunner(
            ["run", "--standalone", *scope, "-m", "pot.operator.handlers"], timeout=60
        ) as runner:
            yield runner
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def vset(make_example: Any) -> dict[str, Any]:
    """examples/validatorset.yaml in namespace farm, through the CRD's defaults."""
    return make_example("validatorset.yaml", ns="farm")


@pytest.fixture
def task(make_example: Any) -> dict[str, Any]:
    return make_example("task.yaml", ns="farm")


@pytest.fixture
def gpu_task(make_example: Any) -> dict[str, Any]:
    return make_example("task-gpu.yaml", ns="farm")


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """``app`` on a free loopback port: its base URL, for the ``with`` block."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
