"""Helpers for trainer tests: tiny specs, free ports, torchrun and in-process runs.

Distributed behaviour is tested with real processes on loopback (torchrun,
gloo), as hivemind and torchtitan do; cheats and tampering run in-process at
world size 1 to keep the suite inside its time budget on two cores.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pot import keys

if TYPE_CHECKING:
    import torch

    from pot.trainer import checkpoints, data, models, tasks, verification

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")
TASK = "ns/demo"
UID = "5f0c6d1e-0000-4000-8000-00000000d3m0"
"""The TrainingTask uid of ``TASK`` (the run seed derives from it)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def solo_start(
    spec: tasks.TaskSpec, built: models.Built
) -> tuple[torch.optim.Optimizer, checkpoints.Checkpoint, data.DataSpec]:
    """A world-size-1 run of ``spec`` at step 0, for replays without torchrun: the optimizer,
    the initial checkpoint (call before anything trains ``built.model``) and the data spec
    (batches of 4)."""
    from pot.trainer import checkpoints, data

    opt = checkpoints.make_optimizer(spec, built.model.parameters())
    start = checkpoints.capture(built.model, opt, step=0, optimizer_steps=0, seed=spec.run_seed)
    dspec = data.DataSpec(
        seed=spec.run_seed,
        dataset=spec.dataset_ref,
        size=len(built.data),
        batch_size=4,
        world_size=1,
    )
    return opt, start, dspec


def mlp_spec(**proof: Any) -> dict[str, Any]:
    return {
        "model": {"name": "mlp-regression", "config": {"hidden": 32}},
        "dataset": {"name": "synthetic-regression", "samples": 1024},
        "hyperparameters": {"lr": 0.01, "batchSize": 16, "steps": 300, "seed": 7},
        "resources": {"nodes": 1},
        "proof": {"segmentSteps": 50, **proof},
    }


def gpt_spec(**proof: Any) -> dict[str, Any]:
    return {
        "model": {
            "name": "tiny-gpt",
            "config": {"dModel": 32, "layers": 2, "heads": 2, "context": 32},
        },
        "dataset": {"name": "tiny-shakespeare"},
        "hyperparameters": {"lr": 0.003, "batchSize": 8, "steps": 120, "seed": 3},
        "resources": {"nodes": 1},
        "proof": {"segmentSteps": 40, **proof},
    }


@dataclass
class Run:
    """The files of one trainer run."""

    root: Path
    spec: dict[str, Any]
    key: keys.Key
    advertise: str = "http://127.0.0.1:8090"
    """The ``storeUrl`` segments carry (serve ``store`` there to audit over HTTP)."""
    nproc: int = 1
    """Workers per node it was trained with (``torchrun`` sets it)."""

    def policy(self, **fields: Any) -> verification.Policy:
        """A verification policy for this run's segments.

        The gang is the one this run was launched with: tests run 2 CPU ranks per
        node, where the operator would launch ``max(gpusPerNode, 1)``."""
        from pot.trainer import segments, tasks, verification

        world = segments.World(nnodes=1, nproc_per_node=self.nproc)
        return verification.Policy(
            task=TASK, spec=tasks.from_spec(self.spec, uid=UID), **{"world": world, **fields}
        )

    def validator_spec(self) -> dict[str, Any]:
        """The spec as a validator of this run's gang reads it: ``gpusPerNode`` is the
        workers per node, so the expected world is the one this run used."""
        resources = {**self.spec.get("resources", {}), "gpusPerNode": self.nproc}
        return {**self.spec, "resources": resources}

    def verify_spec(self) -> Path:
        """``validator_spec`` as a file, for ``pot proof verify --spec``."""
        path = self.root / "verify-spec.json"
        path.write_text(json.dumps(self.validator_spec()))
        return path

    @property
    def store(self) -> Path:
        return self.root / "store"

    @property
    def segs(self) -> Path:
        return self.root / "segs"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def segment_files(self) -> list[Path]:
        return sorted(self.segs.glob("segment-*.json"))

    def args(self) -> list[str]:
        spec_file = self.root / "spec.json"
        key_file = self.root / "miner-0.key"
        return [
            "-m",
            "pot.trainer",
            "--task",
            TASK,
            "--task-uid",
            UID,
            "--spec",
            str(spec_file),
            "--store",
            str(self.store),
            "--state-dir",
            str(self.state),
            "--segments-dir",
            str(self.segs),
            "--miner-key-file",
            str(key_file),
            "--advertise-url",
            self.advertise,
            "--port",
            "0",
        ]


def new_run(root: Path, spec: dict[str, Any], **fields: Any) -> Run:
    root.mkdir(parents=True, exist_ok=True)
    key = keys.generate()
    (root / "spec.json").write_text(json.dumps(spec))
    (root / "miner-0.key").write_text(key.secret.hex())
    return Run(root=root, spec=spec, key=key, **fields)


def torchrun(
    run: Run, nproc: int = 2, *, wait: bool = True, pythonpath: Path | None = None
) -> subprocess.Popen[str]:
    """``torchrun`` the trainer on loopback; ``pythonpath`` is prepended for user models."""
    run.nproc = nproc
    cmd = [
        str(TORCHRUN),
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(nproc),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        *run.args(),
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore::UserWarning"}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(pythonpath), env.get("PYTHONPATH", "")) if p
        )
    proc = subprocess.Popen(
        cmd,
        cwd=run.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    if wait:
        out, _ = proc.communicate(timeout=170)
        assert proc.returncode == 0, out[-4000:]
        (run.root / "torchrun.log").write_text(out)
    return proc


@pytest.fixture(scope="session")
def mlp_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """One honest 2-rank gloo run of mlp-regression, shared by several tests."""
    run = new_run(tmp_path_factory.mktemp("mlp"), mlp_spec())
    torchrun(run)
    return run


@pytest.fixture
def local_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """torch.distributed environment of a world-size-1 run in this process."""
    for name, value in {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
        "GROUP_RANK": "0",
    }.items():
        monkeypatch.setenv(name, value)
    yield


def train_local(
    root: Path, spec: dict[str, Any], cheat: Any = None, *, task: str = TASK, uid: str = UID
) -> Run:
    """Train in this process at world size 1 (needs the ``local_env`` fixture)."""
    from pot.trainer import tasks, training

    run = new_run(root, spec)
    opts = training.Options(
        task=task,
        spec=tasks.from_spec(spec, uid=uid),
        raw_spec=spec,
        store_dir=run.store,
        state_dir=run.state,
        key=run.key,
        segments_dir=run.segs,
        cheat=cheat,
    )
    training.main(opts)
    return run


def run_cli_alone(run: Run) -> subprocess.CompletedProcess[str]:
    """``python -m pot.trainer`` as one process (world size 1, no blob server):
    what a user sees when the spec cannot be used."""
    return subprocess.run(
        [sys.executable, *run.args()[:-2], "--port", "-1"],
        cwd=run.root,
        env={**os.environ, "MASTER_PORT": str(free_port())},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
