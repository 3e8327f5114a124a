"""Shared test configuration: repository paths and opt-in flags for slow suites."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-kind",
        action="store_true",
        default=False,
        help="run end-to-end tests against a kind cluster (needs docker and kind)",
    )


@pytest.fixture(scope="session", autouse=True)
def _main_thread_loop() -> Iterator[None]:
    """A main-thread loop set up front and closed at the end, for the whole suite:
    pytest-asyncio 1.5 otherwise makes one implicitly (asyncio.get_event_loop)
    when an async test follows a sync one and never closes it; its self-pipe
    sockets then surface as an unraisable ResourceWarning in whatever test runs
    when they are collected, which warnings-as-errors turns into a failure."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return ROOT


@pytest.fixture(scope="session")
def helm(repo_root: Path) -> str:
    """The helm binary `make install` unpacked (tests of the chart render with it)."""
    path = repo_root / ".tools" / "bin" / "helm"
    if not path.exists():
        pytest.fail("helm is missing: run `make install` (it unpacks helm into .tools/bin)")
    return str(path)


@pytest.fixture(scope="session")
def helm_template(helm: str, repo_root: Path) -> Callable[..., list[dict[str, Any]]]:
    """``helm_template(release, namespace, *args)``: the chart's rendered documents."""
    import yaml

    def render(release: str, namespace: str, *args: str) -> list[dict[str, Any]]:
        out = subprocess.run(
            [helm, "template", release, "charts/pot-operator", "-n", namespace, *args],
            cwd=repo_root,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        return [d for d in yaml.safe_load_all(out.stdout) if d]

    return render
