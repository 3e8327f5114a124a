"""The checked-in contract artifacts are exactly what the sources compile to (no drift)."""

from __future__ import annotations

import shutil

import pytest

from pot.settlement import compiling


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("node") is None or not (compiling.NODE_MODULES / "solc").is_dir(),
    reason="needs node and solc-js from `make install`",
)
def test_artifacts_match_sources() -> None:
    fresh = compiling.compile_all()
    on_disk = {p.stem for p in compiling.ARTIFACTS.glob("*.json")}
    assert on_disk == set(fresh), (
        "stale or missing artifacts: run python -m pot.settlement.compiling"
    )
    for name, artifact in fresh.items():
        text = (compiling.ARTIFACTS / f"{name}.json").read_text(encoding="utf-8")
        assert text == compiling.render(artifact), (
            f"contracts/artifacts/{name}.json drifted from its source: "
            "run python -m pot.settlement.compiling and commit"
        )
