"""``pot bench NAME`` (or ``pot bench run NAME|all``): run a benchmark from the repository's
``bench/`` folder.

Benchmarks measure ratios against a baseline taken in the same run (never
absolute numbers compared across machines), print a short table and write
``bench/results/NAME.json``. Each ``bench/NAME.py`` defines
``main(quick: bool) -> dict``; ``bench/common.py`` holds the shared table and
JSON writer (``POT_BENCH_RESULTS=DIR`` writes the JSON there instead; the smoke
tests, tests/test_bench.py, run every ``--quick`` that way).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import typer

from pot import errors

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"


def available() -> list[str]:
    """Names of the benchmarks in ``bench/``."""
    if not BENCH_DIR.is_dir():
        return []
    return sorted(p.stem for p in BENCH_DIR.glob("*.py") if p.stem not in {"common", "__init__"})


def run(name: str, *, quick: bool = False) -> dict[str, object]:
    """Run ``bench/NAME.py``'s ``main`` and return its results."""
    path = BENCH_DIR / f"{name}.py"
    if not path.is_file():
        raise errors.ConfigError(
            f"no benchmark named {name!r} (available: {', '.join(available()) or 'none'})"
        )
    sys.path.insert(0, str(BENCH_DIR))
    try:
        spec = importlib.util.spec_from_file_location(f"pot_bench_{name}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        result: dict[str, object] = module.main(quick=quick)
        return result
    finally:
        sys.path.remove(str(BENCH_DIR))


@app.command("list")
def list_() -> None:
    """List the benchmarks."""
    for name in available():
        typer.echo(name)


@app.command("run")
def run_cmd(
    name: str = typer.Argument(..., help="Benchmark name, or 'all'."),
    quick: bool = typer.Option(False, "--quick", help="Smaller sizes, for a smoke run."),
) -> None:
    """Run one benchmark (or all) and write bench/results/NAME.json."""
    for n in available() if name == "all" else [name]:
        typer.echo(f"== bench {n}")
        run(n, quick=quick)


def _named(name: str) -> None:
    """``pot bench NAME [--quick]``: one command per file in ``bench/``, as the issues and docs
    name them (``pot bench pbft``); ``run`` stays for ``all``."""

    def command(
        quick: bool = typer.Option(False, "--quick", help="Smaller sizes, for a smoke run."),
    ) -> None:
        typer.echo(f"== bench {name}")
        run(name, quick=quick)

    doc = (BENCH_DIR / f"{name}.py").read_text().split('"""')[1].strip().splitlines()[0]
    app.command(name, help=f"{doc} (bench/{name}.py)")(command)


for _name in available():
    if _name not in {"list", "run"}:
        _named(_name)
