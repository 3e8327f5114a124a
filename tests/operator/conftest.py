"""Fixtures of the operator tests: example bodies (examples/ with metadata) and nodes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

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


@pytest.fixture(scope="session", autouse=True)
def _main_thread_loop() -> Any:
    """A main-thread loop set up front and closed at the end: pytest-asyncio 1.5
    otherwise makes one implicitly (asyncio.get_event_loop) when an async test
    follows a sync one, never closes it, and the ResourceWarning fails the run."""
    import asyncio

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()
