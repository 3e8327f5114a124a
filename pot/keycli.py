"""``pot key``: make key files and read their addresses, never showing a key.

The install walkthrough (README, "Installing on a real cluster") needs a key per
validator replica and per miner node, as files for ``kubectl create secret
--from-file``, and the validators' addresses for ``pot chain deploy
--validators``. ``new`` writes fresh keys (hex, mode 0600, never over an
existing file) and prints only their addresses; ``address`` prints the address
of existing key files, one per line, which is the file ``--validators`` reads.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from pot import errors, files, keys

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)


def _create(path: Path, key: keys.Key) -> None:
    """Write ``key`` as hex to a new file ``path`` (0600 from its creation on)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise errors.ConfigError(f"{path}: exists; not overwriting a key file") from None
    except OSError as exc:
        raise errors.ConfigError(f"{path}: cannot create ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write("0x" + key.secret.hex() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    files.sync_dir(path.parent)


@app.command()
def new(
    paths: list[Path] = typer.Argument(..., help="Key files to create (must not exist)."),
) -> None:
    """Create a fresh key in each FILE (hex, mode 0600) and print its address.

    Prints ``FILE ADDRESS`` per key; the keys themselves are never printed."""
    taken = [p for p in paths if p.exists()]
    if taken:  # checked before any is written: all or none
        raise errors.ConfigError(f"{taken[0]}: exists; not overwriting a key file")
    if len(set(paths)) != len(paths):
        raise errors.ConfigError("the same file is named twice")
    for path in paths:
        key = keys.generate()
        _create(path, key)
        typer.echo(f"{path} {key.address}")


@app.command()
def address(
    paths: list[Path] = typer.Argument(..., help="Key files (hex private keys)."),
) -> None:
    """Print the address of each key FILE, one per line (a `--validators` file)."""
    for path in paths:
        typer.echo(keys.from_file(path).address)
