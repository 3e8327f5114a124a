"""Shared test configuration: repository paths and opt-in flags for slow suites."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-kind",
        action="store_true",
        default=False,
        help="run end-to-end tests against a kind cluster (needs docker and kind)",
    )


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root."""
    return ROOT
