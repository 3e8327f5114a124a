"""A node lost mid-run: the gang restarts and resumes from the state another node kept.

Two nodes (one torchrun each, static rendezvous on loopback), each with its
own store and state directory, as the operator's node-local hostPath gives
them. Both are killed after a few segments, and node 0's disk is wiped: rank 0
was rescheduled onto a fresh node. The restarted gang resumes from node 1's
checkpoint, which it broadcasts. Node 0 publishes, under its own key, the
segments it no longer has a record of. Every segment of both nodes must chain
and verify when fetched over HTTP from the ``storeUrl`` it names, as a
validator fetches it. Node 0's wiped store lacks the checkpoints of its early
segments, so its server answers those from node 1 (``serving.PeerStore``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pot import keys, store
from pot.trainer import segments, serving, tasks, verification

from .conftest import TASK, UID, free_port, mlp_spec

pytestmark = pytest.mark.slow
TORCHRUN = Path(sys.executable).parent / "torchrun"
SEGMENTS = 6  # 300 steps / k = 50


def _launch(
    root: Path, rank: int, master: int, key: keys.Key, port: int
) -> subprocess.Popen[bytes]:
    node = root / f"node-{rank}"
    node.mkdir(exist_ok=True)
    (node / "miner.key").write_text(key.secret.hex())
    cmd = [
        str(TORCHRUN),
        "--nnodes=2",
        "--nproc-per-node=1",
        f"--node-rank={rank}",
        "--master-addr=127.0.0.1",
        f"--master-port={master}",
        "-m", "pot.trainer",
        "--task", TASK, "--task-uid", UID,
        "--spec", str(root / "spec.json"),
        "--store", str(node / "store"),
        "--state-dir", str(node / "state"),
        "--segments-dir", str(root / "segs"),
        "--miner-key-file", str(node / "miner.key"),
        "--advertise-url", f"http://127.0.0.1:{port}",
        "--port", str(port),
    ]  # fmt: skip
    with (root / f"node-{rank}.log").open("ab") as log:
        return subprocess.Popen(
            cmd,
            cwd=node,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONWARNINGS": "ignore::UserWarning"},
            start_new_session=True,
        )


def _gang(root: Path, miners: list[keys.Key], ports: list[int]) -> list[subprocess.Popen[bytes]]:
    master = free_port()
    return [_launch(root, rank, master, miners[rank], ports[rank]) for rank in range(2)]


def _descendants(pid: int) -> list[int]:
    """Every live process under ``pid`` (torchrun's workers may sit in their own group)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGKILL each node's torchrun and its workers, as a lost node's processes die."""
    for p in procs:
        if p.poll() is None:
            for pid in [p.pid, *_descendants(p.pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        p.wait()


def _node_segments(root: Path, rank: int) -> list[segments.Segment]:
    return [segments.parse(p.read_bytes()) for p in sorted(root.glob(f"segs/segment-{rank}-*"))]


def test_gang_resumes_after_losing_rank0s_node(tmp_path: Path) -> None:
    spec: dict[str, Any] = {**mlp_spec(), "resources": {"nodes": 2}}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    miners = [keys.generate(), keys.generate()]
    ports = [free_port(), free_port()]
    procs = _gang(tmp_path, miners, ports)
    try:
        deadline = time.monotonic() + 120
        while len(_node_segments(tmp_path, 1)) < 3 and time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs), (tmp_path / "node-1.log").read_text()
            time.sleep(0.02)
    finally:
        _kill(procs)
    before = len(_node_segments(tmp_path, 1))
    assert 3 <= before < SEGMENTS, "the kill came after the last segment"
    for lost in ("store", "state"):  # rank 0's node is gone; its pod lands on a fresh one
        shutil.rmtree(tmp_path / "node-0" / lost, ignore_errors=True)

    procs = _gang(tmp_path, miners, ports)
    try:
        for rank, p in enumerate(procs):
            assert p.wait(timeout=150) == 0, (tmp_path / f"node-{rank}.log").read_text()[-3000:]
    finally:
        _kill(procs)

    # The nodes' blob servers as they run in the pods (the trainers have exited).
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    servers = []
    for rank in range(2):
        blobs = serving.PeerStore(store.FilesystemStore(tmp_path / f"node-{rank}" / "store"))
        blobs.set_peers(urls, own=urls[rank])
        servers.append(serving.Server(blobs, host="127.0.0.1", port=ports[rank]).start())
    try:
        policy = verification.Policy(task=TASK, spec=tasks.from_spec(spec, uid=UID))
        for rank in range(2):
            segs = _node_segments(tmp_path, rank)
            assert [s.index for s in segs] == list(range(SEGMENTS)), rank
            assert segs[-1].final and not any(s.final for s in segs[:-1])
            for a, b in itertools.pairwise(segs):
                assert a.end_cid == b.start_cid, (rank, a.index)
            previous = None
            for seg in segs:
                segments.check_signature(seg, miners[rank].address)
                assert seg.store_url == urls[rank]
                policy.previous = previous
                verification.clear_caches()  # fetch every blob, as a fresh validator would
                verdict = verification.verify_segment(seg, store.HttpStore(seg.store_url), policy)
                assert verdict.valid, (rank, seg.index, verdict.line())
                previous = seg
    finally:
        for server in servers:
            server.stop()
    # Each trainer told its blob server where the gang's other stores are.
    for rank in range(2):
        events = [
            json.loads(line)
            for line in (tmp_path / f"node-{rank}.log").read_text().splitlines()
            if line.startswith("{")
        ]
        assert {"event": "peers", "storeUrls": urls} in [
            {k: e.get(k) for k in ("event", "storeUrls")}
            for e in events
            if e.get("event") == "peers"
        ]
    # Node 0's server fetched the early checkpoints it had lost from node 1.
    early = _node_segments(tmp_path, 0)[0]
    assert (tmp_path / "node-0" / "store").exists()
    assert store.FilesystemStore(tmp_path / "node-0" / "store").has(early.start_cid)
