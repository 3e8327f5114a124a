"""The object log under a full disk, and clients of a reset history: a write cut short leaves no
torn record behind; a torn record in the middle of the log (from a server before that fix) does
not make the replay drop every acknowledged write after it; a watch from a revision the store
never had is 410."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from pot import errors
from pot.localcluster import storage
from tests.localcluster.conformance_kit import NS, cm, ok, watch_lines
from tests.localcluster.conftest import start_threaded


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


def test_a_watch_from_a_revision_the_store_never_had_is_410(tmp_path: Path) -> None:
    # The state directory reset under a running operator: its resourceVersion is from the
    # old history. It must relist (410), not wait silently until the counter catches up.
    srv, c = start_threaded(tmp_path)
    try:
        rv = ok(c, "GET", f"{NS}/configmaps")["metadata"]["resourceVersion"]
        path = f"{NS}/configmaps?watch=true&timeoutSeconds=3&resourceVersion={int(rv) + 5000}"
        events = watch_lines(c, path, 1, timeout=10)
        assert events and events[0]["type"] == "ERROR", events
        assert events[0]["object"]["code"] == 410
        assert "newer than the server's" in events[0]["object"]["message"]
        ok(c, "GET", f"{NS}/configmaps?watch=true&timeoutSeconds=1&resourceVersion={rv}")
    finally:
        srv.stop()
