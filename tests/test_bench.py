"""Every benchmark's --quick mode runs and writes valid JSON: a smoke test, no timings asserted.

Each runs as ``pot bench NAME --quick`` in its own process, as a user runs it, with
``POT_BENCH_RESULTS`` pointing at a temporary folder so a smoke run never overwrites the
results of a real one in bench/results.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


def _load(name: str) -> ModuleType:
    """bench/NAME.py by its path (the repository's settlement/ folder is also importable as
    ``settlement``), with bench/ on sys.path for its ``import common``."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"test_bench_{name}", BENCH / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


common = _load("common")

FAST = ["appstate", "settlement", "apiserver"]
# Minutes each on two shared cores: processes, clusters and training runs.
SLOW = ["pbft", "trainer", "kubelet", "operator"]


def _strict(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _smoke(name: str, tmp_path: Path) -> dict[str, Any]:
    env = {**os.environ, "POT_BENCH_RESULTS": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "pot", "bench", name, "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert "Traceback" not in out.stderr
    path = tmp_path / f"{name}.json"
    assert f"(written to {path})" in out.stdout
    doc: dict[str, Any] = _strict(path.read_text())
    assert doc["benchmark"] == name
    facts = doc["machine"]
    assert facts["cpus"] >= 1 and facts["python"] and facts["when"]
    assert len(facts["loadavg_1_5_15"]) == 3
    columns = doc["columns"]
    assert doc["rows"] and all(len(r) == len(columns) for r in doc["rows"])
    # The short table on stdout: its header line carries every column.
    assert all(c in out.stdout for c in columns)
    return doc


def test_every_bench_is_covered_here() -> None:
    from pot import benching

    assert sorted(FAST + SLOW) == benching.available()


@pytest.mark.slow
@pytest.mark.parametrize("name", FAST)
def test_quick_bench_writes_json(name: str, tmp_path: Path) -> None:
    _smoke(name, tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(
    not os.environ.get("POT_BENCH_SMOKE"),
    reason="about 2 minutes on 2 cores, kept out of CI's time: make bench-smoke",
)
@pytest.mark.parametrize("name", SLOW)
def test_slow_quick_bench_writes_json(name: str, tmp_path: Path) -> None:
    _smoke(name, tmp_path)


def test_results_folder_is_overridable_and_percentiles_need_samples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POT_BENCH_RESULTS", str(tmp_path))
    doc = common.report("unit", ["a", "p99"], [[1, None], [2, 0.5]], extra=1)
    assert _strict((tmp_path / "unit.json").read_text()) == json.loads(json.dumps(doc))
    assert "n/a" in capsys.readouterr().out
    # Nearest rank: of 1..100 the p99 is 99 (not the maximum); under 100 samples there is none.
    assert common.percentile([float(i) for i in range(1, 101)], 0.99) == 99.0
    assert common.percentile([float(i) for i in range(1, 100)], 0.99) is None
    assert common.percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    with pytest.raises(ValueError):
        common.report("unit", ["ratio"], [[float("nan")]])


def test_settlement_pays_existing_accounts_on_the_in_process_evm_too() -> None:
    # The docstring's condition (payees hold 1 wei, as miners who sent transactions do) held
    # only on anvil: on the in-process EVM each merkle claim paid a fresh account, 25,000 gas
    # more per payee for that baseline (95,560 instead of 70,560 at 2 payees), and the
    # withdraw column read 0 as if withdrawing cost nothing.
    from pot.settlement import devchain

    settlement = _load("settlement")
    with devchain.running("evm") as dev:
        rows = {r[0]: r for r in settlement.measure(dev, 2)}
    assert rows["merkle claims"][3] < 70_560 + 12_500  # per payee: no fresh-account surcharge
    assert rows["pot settle"][5] > 21_000  # a withdraw was measured
    assert rows["merkle claims"][5] is None
