"""The object log under a full disk: a write cut short leaves no torn record behind, and a
torn record in the middle of the log (from a server before that fix) does not make the
replay drop every acknowledged write after it."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from pot import errors
from pot.localcluster import storage
from tests.localcluster.conformance_kit import cm


def _key(name: str) -> storage.Key:
    return ("", "configmaps", "default", name)


def test_replay_skips_a_torn_record_and_keeps_the_writes_after_it(tmp_path: Path) -> None:
    s = storage.Store(tmp_path)
    for name in ("a", "b", "c"):
        s.put(_key(name), cm(name))
    s.flush()
    s.close()
    log = tmp_path / storage.LOG_NAME
    lines = log.read_bytes().splitlines(keepends=True)
    a, b, c = lines[-3:]
    # "a" cut short by a full disk; "b" appended right after it, then "c".
    log.write_bytes(b"".join(lines[:-3]) + a[: len(a) // 2] + b + c)
    s = storage.Store(tmp_path)
    try:
        assert s.get(_key("a")) is None
        assert s.get(_key("b")) is not None and s.get(_key("c")) is not None
    finally:
        s.close()


def test_a_write_cut_short_leaves_no_torn_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = storage.Store(tmp_path)
    s.put(_key("before"), cm("before"))
    s.flush()
    log = tmp_path / storage.LOG_NAME
    size = log.stat().st_size
    real_write = os.write
    calls = {"n": 0}

    def full_disk(fd: int, data: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage.os, "write", full_disk)
    with pytest.raises(errors.ClusterError, match="No space left"):
        s.put(_key("lost"), cm("lost"))
    monkeypatch.setattr(storage.os, "write", real_write)
    assert log.stat().st_size == size
    s.put(_key("after"), cm("after"))  # space again
    s.flush()
    s.close()
    s = storage.Store(tmp_path)
    try:
        assert s.get(_key("before")) is not None and s.get(_key("after")) is not None
    finally:
        s.close()
