"""Dockerfiles: multi-stage, non-root, pinned; `make images` says so when it cannot build."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

IMAGES = ["operator", "trainer", "validator"]


@pytest.mark.parametrize("name", IMAGES)
def test_dockerfile_hygiene(repo_root: Path, name: str) -> None:
    text = (repo_root / "images" / f"{name}.Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2, "multi-stage build"
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and not users[-1].startswith(("root", "0")), "final stage runs as non-root"
    assert ":latest" not in text
    for image in re.findall(r"^ARG \w+_IMAGE=(\S+)", text, re.M):
        assert re.search(r":\d", image), f"base image {image} is pinned to a version"
    for pkg in re.findall(r'"([a-z0-9-]+)(==|>=)', text):
        assert pkg[1] == "==", f"{pkg[0]} pinned exactly"


@pytest.mark.skipif(
    shutil.which("docker") is not None
    and subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0,
    reason="a Docker engine runs here; `make e2e-kind` builds the images",
)
def test_make_images_explains_missing_docker(repo_root: Path) -> None:
    out = subprocess.run(
        ["scripts/build-images"], cwd=repo_root, capture_output=True, text=True, check=False
    )
    assert out.returncode == 1
    assert "no Docker engine" in out.stderr
