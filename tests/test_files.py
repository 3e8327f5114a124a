"""``pot.files.write_atomic``: whole old bytes or whole new bytes, and a durable name."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pot import errors, files


def test_write_atomic_replaces_whole_and_syncs_the_file_then_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "sub" / "log"
    files.write_atomic(target, b"old")
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    files.write_atomic(target, b"new bytes")
    assert target.read_bytes() == b"new bytes"
    assert synced == ["file", "dir"]  # the data first, then the rename
    assert [p.name for p in target.parent.iterdir()] == ["log"]  # no temporary left


def test_a_failed_write_leaves_the_old_bytes_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state"
    files.write_atomic(target, b"committed")

    def replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="No space"):
        files.write_atomic(target, b"lost")
    assert target.read_bytes() == b"committed"
    assert [p.name for p in tmp_path.iterdir()] == ["state"]


def test_secret_key_is_made_once_private_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "auth.key"
    key = files.secret_key(path)
    assert len(key) == 32 and files.secret_key(path) == key  # kept across calls (restarts)
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_bytes(b"short")
    with pytest.raises(errors.ConfigError, match=r"auth\.key: not a key"):
        files.secret_key(path)
