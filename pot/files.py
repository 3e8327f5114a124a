"""Crash-safe file writes, shared by the content store, trainer state and the PBFT log.

A write goes to a temporary file in the same directory, is fsynced, then
renamed over the target: after a crash the target holds either the old bytes
or the new ones, never a torn mix. The directory is fsynced after the rename:
until it is, a power cut may forget the rename itself (POSIX makes a name
durable only through its directory), and a caller that went on as if the
write had landed (the PBFT log before a vote leaves) would be wrong.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from pot import errors


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    sync_dir(path.parent)


def sync_dir(directory: Path) -> None:
    """Make the names in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: a file system without directory fsync
            raise
    finally:
        os.close(fd)


def secret_key(path: Path, size: int = 32) -> bytes:
    """The random key kept at ``path``, made on first use (mode 0600, written atomically)."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = os.urandom(size)
        write_atomic(path, key)  # mkstemp creates the file 0600
    if len(key) < size:
        raise errors.ConfigError(f"{path}: not a key (expected {size} bytes, found {len(key)})")
    return key
