"""DESIGN §2: one `pot` namespace; no component folder shadows the standard library."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

COMPONENTS = ["operator", "trainer", "validator", "settlement", "localcluster", "contracts"]


@pytest.mark.parametrize("component", COMPONENTS)
def test_component_maps_into_pot(repo_root: Path, component: str) -> None:
    module = importlib.import_module(f"pot.{component}")
    assert Path(next(iter(module.__path__))).resolve() == (repo_root / component).resolve()
    # A regular package here would be importable as a top-level name from the
    # repository root, and `operator` would shadow the standard library.
    assert not (repo_root / component / "__init__.py").exists()


def test_stdlib_operator_from_repo_root(repo_root: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import operator; print(operator.add(2, 3), operator.__file__)"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("5 ")
    assert str(repo_root / "operator") not in out.stdout


def test_torch_pinned_exactly(repo_root: Path) -> None:
    deps = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.13.0" in deps


def test_ci_runs_the_readme_test_command(repo_root: Path) -> None:
    assert "make test" in (repo_root / ".ci" / "run").read_text()
    readme = (repo_root / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
