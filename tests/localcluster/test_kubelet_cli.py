"""`pot local up --nodes FILE` then `pot local down`, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from pot.localcluster import podnet

pytestmark = pytest.mark.slow

BIN = Path(__file__).resolve().parents[2] / ".venv" / "bin"


def _run(*argv: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_up_with_a_node_layout_and_down_leaves_nothing(tmp_path: Path) -> None:
    layout = tmp_path / "nodes.yaml"
    layout.write_text("nodes:\n- {name: solo, gpus: 2, gpuProduct: NVIDIA-H200}\n")
    directory = tmp_path / "cluster"
    pot = str(BIN / "pot")
    try:
        kubeconfig = _run(
            pot, "local", "up", "--dir", str(directory), "--nodes", str(layout)
        ).strip()
        env = {**os.environ, "KUBECONFIG": kubeconfig, "KUBECACHEDIR": str(tmp_path / "cache")}
        kubectl = str(BIN / "kubectl")
        for _ in range(120):  # the control plane registers the node a moment after `up`
            if (
                subprocess.run(
                    [kubectl, "get", "node", "solo"], check=False, capture_output=True, env=env
                ).returncode
                == 0
            ):
                break
            time.sleep(0.25)
        _run(kubectl, "wait", "--for=condition=Ready", "node/solo", "--timeout=30s", env=env)
        node = json.loads(_run(kubectl, "get", "node", "solo", "-o", "json", env=env))
        assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H200"
        assert node["status"]["capacity"]["nvidia.com/gpu"] == "2"
        _run(
            kubectl,
            "run",
            "sleeper",
            "--image=pot-trainer",
            "--command",
            "--",
            "sleep",
            "300",
            env=env,
        )
        _run(kubectl, "wait", "--for=condition=Ready", "pod/sleeper", "--timeout=30s", env=env)
    finally:
        _run(pot, "local", "down", "--dir", str(directory))
    ps = _run("ps", "-eo", "pid,args")
    assert [
        line
        for line in ps.splitlines()
        if str(directory) in line or ("sleep 300" in line and "pot" in line)
    ] == []
    netns = subprocess.run(
        ["ip", "netns", "list"], check=False, capture_output=True, text=True
    ).stdout
    assert f"pot{podnet.tag(directory)}-" not in netns
