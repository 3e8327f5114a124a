"""Durability and process management: ``pot local up|status|down``, kill -9, restarts."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from pot.localcluster import launching
from tests.localcluster.conftest import Cluster

pytestmark = pytest.mark.slow


def _pot(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pot", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _cluster(directory: Path) -> Cluster:
    st = launching.status(directory)
    assert st.url is not None
    return Cluster(directory, directory / "kubeconfig", st.url)


def test_cli_up_status_down(tmp_path: Path) -> None:
    d = tmp_path / "cli"
    up = _pot("local", "up", "--dir", str(d))
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == str(d / "kubeconfig") and (d / "kubeconfig").exists()
    again = _pot("local", "up", "--dir", str(d))
    assert again.returncode == 0 and "already up" in again.stdout
    st = _pot("local", "status", "--dir", str(d))
    assert st.returncode == 0 and st.stdout.startswith("up:") and "apiserver: pid" in st.stdout
    down = _pot("local", "down", "--dir", str(d))
    assert down.returncode == 0 and "apiserver" in down.stdout
    st = _pot("local", "status", "--dir", str(d))
    assert st.returncode == 1 and st.stdout.startswith("down:")


def test_kill_9_loses_no_acknowledged_write_and_down_up_keeps_state(tmp_path: Path) -> None:
    d = tmp_path / "dur"
    launching.up(d, components=[])
    c = _cluster(d)
    acked: list[tuple[str, str]] = []
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            try:
                code, out = c.request(
                    "POST",
                    "/api/v1/namespaces/default/configmaps",
                    {"metadata": {"name": f"w-{i}"}, "data": {"i": str(i)}},
                )
            except (OSError, http.client.HTTPException):
                return  # the server died under us: this write was never acknowledged
            if code != 201:
                return  # the server died under us: this write was never acknowledged
            acked.append((out["metadata"]["name"], out["metadata"]["resourceVersion"]))
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    deadline = time.monotonic() + 60  # enough acknowledged writes, however loaded the machine
    while len(acked) <= 10 and t.is_alive():
        assert time.monotonic() < deadline, f"only {len(acked)} writes acknowledged"
        time.sleep(0.05)
    time.sleep(0.2)  # and kill it mid-stream
    pid = launching.status(d).running["apiserver"]
    os.kill(pid, signal.SIGKILL)
    t.join(30)
    stop.set()
    while launching.status(d).running:
        launching._reap(pid)
        time.sleep(0.05)
    assert len(acked) > 10
    old_rv = acked[-1][1]

    launching.up(d, components=[])
    c = _cluster(d)
    items = {
        i["metadata"]["name"]: i["metadata"]["resourceVersion"]
        for i in c.request("GET", "/api/v1/namespaces/default/configmaps")[1]["items"]
    }
    missing = [name for name, _ in acked if name not in items]
    assert not missing, f"{len(missing)} acknowledged writes lost"
    assert all(items[name] == rv for name, rv in acked)
    # resourceVersions keep increasing across restarts.
    code, made = c.request(
        "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "after"}}
    )
    assert code == 201 and int(made["metadata"]["resourceVersion"]) > int(old_rv)
    # A watch from before the restart is too old: 410 Gone as an ERROR event, so clients relist.
    with urllib.request.urlopen(
        f"{c.url}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=5", timeout=10
    ) as resp:
        event = json.loads(resp.readline())
    assert event["type"] == "ERROR" and event["object"]["code"] == 410

    launching.down(d)
    launching.up(d, components=[])
    c = _cluster(d)
    code, got = c.request("GET", "/api/v1/namespaces/default/configmaps/after")
    assert code == 200 and got["metadata"]["resourceVersion"] == made["metadata"]["resourceVersion"]
    launching.down(d)


def test_second_server_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    from pot import errors
    from pot.localcluster import storage

    first = storage.Store(tmp_path)
    try:
        with pytest.raises(errors.ClusterError, match="another API server"):
            storage.Store(tmp_path)
    finally:
        first.close()


def test_torn_last_line_is_ignored(tmp_path: Path) -> None:
    from pot.localcluster import storage

    s = storage.Store(tmp_path)
    s.put(("", "configmaps", "default", "a"), {"metadata": {"name": "a"}})
    s.close()
    with open(tmp_path / storage.LOG_NAME, "a") as f:
        f.write('{"op": "put", "rv": 99, "k": ["", "configmaps", "default", "b"], "o": {"meta')
    s = storage.Store(tmp_path)
    assert (
        s.get(("", "configmaps", "default", "a")) is not None
        and s.get(("", "configmaps", "default", "b")) is None
    )
    assert s.rv == 1
    s.close()
