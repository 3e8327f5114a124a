"""End-to-end fixtures: one test body, two clusters.

``cluster`` is the embedded local cluster (always; it is what CI runs) or a
kind cluster (only with ``--run-kind`` where ``docker`` and ``kind`` exist:
it builds and loads the images and installs the chart there). ``deployment``
puts a dev chain beside the cluster, deploys the contract, installs the
operator with helm and brings the example ValidatorSet to Ready: the same
steps as ``pot demo`` (both use ``pot.stack``).
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pot import stack


@dataclass
class Cluster:
    kind: str
    kubeconfig: Path
    pod_reachable_host: str
    """An address of this machine that the cluster's pods can reach."""


def _local(tmp: Path) -> Iterator[Cluster]:
    from pot import demo
    from pot.localcluster import launching

    directory = tmp / "cluster"
    kubeconfig, _ = launching.up(
        directory, authorization="RBAC"
    )  # the operator as its chart grants
    try:
        yield Cluster("local", kubeconfig, demo._gateway(directory))
    finally:
        launching.down(directory)


def _kind(tmp: Path, repo_root: Path) -> Iterator[Cluster]:
    name = f"pot-e2e-{uuid.uuid4().hex[:6]}"
    kubeconfig = tmp / "kind-kubeconfig"
    subprocess.run(
        ["kind", "create", "cluster", "--name", name, "--kubeconfig", str(kubeconfig)], check=True
    )
    try:
        subprocess.run(["make", "images"], cwd=repo_root, check=True)
        for image in ("pot-operator", "pot-trainer", "pot-validator"):
            subprocess.run(
                ["kind", "load", "docker-image", f"{image}:0.1.0", "--name", name], check=True
            )
        gateway = subprocess.run(
            ["docker", "network", "inspect", "kind", "-f", "{{(index .IPAM.Config 0).Gateway}}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        yield Cluster("kind", kubeconfig, gateway)
    finally:
        subprocess.run(["kind", "delete", "cluster", "--name", name], check=False)


@pytest.fixture(
    scope="package",
    params=["local", pytest.param("kind", marks=pytest.mark.kind)],
)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, repo_root: Path
) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp(f"e2e-{request.param}")
    if request.param == "kind":
        if not request.config.getoption("--run-kind"):
            pytest.skip("kind e2e is opt-in: make e2e-kind (or pytest --run-kind)")
        missing = [t for t in ("docker", "kind") if shutil.which(t) is None]
        if missing:
            pytest.skip(f"kind e2e needs {' and '.join(missing)} on PATH")
        yield from _kind(tmp, repo_root)
    else:
        yield from _local(tmp)


@pytest.fixture(scope="package")
def deployment(cluster: Cluster) -> Iterator[stack.Stack]:
    from pot.settlement import devchain

    chain = devchain.start("auto", host=cluster.pod_reachable_host)
    try:
        st = stack.Stack(
            kubeconfig=cluster.kubeconfig,
            chain=chain,
            contract=stack.deploy_contract(chain),
            namespace="default",
        )
        st.stake_miners(10**18)
        st.bring_up_validators(timeout=300)
        yield st
    finally:
        chain.close()
