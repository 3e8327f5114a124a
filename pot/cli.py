"""The ``pot`` command line.

Each component contributes a sub-command group from its own ``cli`` module
(``pot.localcluster.cli`` gives ``pot local``, ...). Sub-command modules import
their heavy dependencies (torch, web3, kopf) inside the commands, so ``pot
--help`` stays fast. Errors users can cause are printed as one line,
``error: ...``, with a non-zero exit; never a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import typer

from pot import __version__, cids, errors

app = typer.Typer(
    name="pot",
    help="Proof-of-Training on Kubernetes: verifiable training work, fairly paid.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# (command group, module that defines `app: typer.Typer`, help)
_GROUPS: list[tuple[str, str, str]] = [
    ("local", "pot.localcluster.cli", "Run the embedded local cluster (no Docker needed)."),
    ("task", "pot.operator.cli", "Inspect TrainingTasks."),
    ("proof", "pot.trainer.cli", "Check proof segments."),
    ("pbft", "pot.validator.cli", "Exercise the PBFT state machine."),
    ("chain", "pot.settlement.cli", "Deploy and inspect the settlement contracts."),
    ("bench", "pot.benching", "Benchmarks: ratios against a same-run baseline."),
    ("key", "pot.keycli", "Make key files and print their addresses."),
]

# Single commands contributed by components: (name, module, function).
_COMMANDS: list[tuple[str, str, str]] = [
    ("demo", "pot.demo", "demo"),
]


@app.command()
def version() -> None:
    """Print pot's version."""
    typer.echo(__version__)


@app.command()
def cid(file: Path = typer.Argument(..., help="File whose CID to print.")) -> None:
    """Print the CIDv1 (raw, sha2-256, base32) of FILE, as IPFS would."""
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise errors.ConfigError(f"{file}: no such file") from None
    except IsADirectoryError:
        raise errors.ConfigError(f"{file}: is a directory") from None
    except OSError as exc:
        raise errors.ConfigError(f"{file}: cannot read ({exc.strerror})") from None
    typer.echo(cids.cid_of(data))


def _register() -> None:
    for name, module, help_text in _GROUPS:
        if importlib.util.find_spec(module) is None:
            continue
        sub = importlib.import_module(module).app
        app.add_typer(sub, name=name, help=help_text)
    for name, module, func in _COMMANDS:
        if importlib.util.find_spec(module) is None:
            continue
        app.command(name=name)(getattr(importlib.import_module(module), func))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``pot`` script."""
    _register()
    try:
        app(args=argv, standalone_mode=True)
    except errors.PotError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
