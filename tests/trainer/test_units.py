"""Checkpoint encoding, data order, the publisher's outbox and the blob server."""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pot import cids, errors, keys, store
from pot.trainer import checkpoints, data, publishing, segments, serving, tasks

SPEC = tasks.from_spec(
    {
        "model": {"name": "mlp-regression"},
        "dataset": {"name": "synthetic-regression"},
        "hyperparameters": {"steps": 4},
        "proof": {"segmentSteps": 2},
    }
)


def _state() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    opt = checkpoints.make_optimizer(SPEC, model.parameters())
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    return model, opt


def test_checkpoint_round_trip_is_deterministic() -> None:
    model, opt = _state()
    ckpt = checkpoints.capture(model, opt, step=1, optimizer_steps=1, seed=0)
    raw = checkpoints.encode(ckpt)
    assert (
        checkpoints.encode(checkpoints.capture(model, opt, step=1, optimizer_steps=1, seed=0))
        == raw
    )
    back = checkpoints.decode(raw)
    assert back.step == 1 and back.optimizer_steps == 1
    model2, opt2 = _state()
    with torch.no_grad():
        for p in model2.parameters():
            p.add_(1.0)
    checkpoints.restore(back, model2, opt2)
    again = checkpoints.capture(model2, opt2, step=1, optimizer_steps=1, seed=0)
    assert checkpoints.encode(again) == raw


@pytest.mark.parametrize("cut", [0, 5, 11, 40, -1])
def test_truncated_checkpoint_does_not_decode(cut: int) -> None:
    model, opt = _state()
    raw = checkpoints.encode(checkpoints.capture(model, opt, step=1, optimizer_steps=1, seed=0))
    with pytest.raises(errors.ProofError):
        checkpoints.decode(raw[:cut])


@settings(max_examples=30, deadline=None)
@given(
    size=st.integers(1, 50),
    batch=st.integers(1, 7),
    world=st.integers(1, 3),
    seed=st.integers(0, 2**31),
)
def test_data_order_covers_each_epoch_once(size: int, batch: int, world: int, seed: int) -> None:
    spec = data.DataSpec(seed=seed, dataset="d", size=size, batch_size=batch, world_size=world)
    steps = -(-size // (batch * world)) + 1
    stream = torch.cat([spec.indices(t, r) for t in range(steps) for r in range(world)])
    assert sorted(stream[:size].tolist()) == list(range(size))
    again = data.DataSpec(seed=seed, dataset="d", size=size, batch_size=batch, world_size=world)
    assert torch.equal(again.indices(steps - 1, world - 1), spec.indices(steps - 1, world - 1))


def _signed(index: int) -> segments.Segment:
    seg = segments.Segment(
        task="ns/t",
        index=index,
        node_rank=0,
        miner="0x" + "0" * 40,
        start_step=index,
        steps=1,
        start_cid=cids.cid_of(b"a"),
        end_cid=cids.cid_of(b"b"),
        data_spec={},
        hyperparams_hash="0x" + "0" * 64,
        losses=(1.0,),
        world=segments.World(nnodes=1, nproc_per_node=1),
    )
    return segments.sign(seg, keys.generate())


class _Validator(http.server.BaseHTTPRequestHandler):
    codes: ClassVar[list[int]] = []
    bodies: ClassVar[list[bytes]] = []
    pending: ClassVar[list[bool]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        code = self.codes.pop(0) if self.codes else 202
        answer: dict[str, object] = {"accepted": code == 202, "reason": "BAD_SIGNATURE"}
        if code == 202:
            self.bodies.append(body)
            if self.pending:
                answer["committed"] = not self.pending.pop(0)
        payload = json.dumps(answer).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def validator() -> Iterator[tuple[str, type[_Validator]]]:
    handler = type("H", (_Validator,), {"codes": [], "bodies": [], "pending": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_publisher_retries_until_acknowledged_and_survives_restart(
    tmp_path: Path, validator: tuple[str, type[_Validator]]
) -> None:
    url, handler = validator
    handler.codes.extend([503, 503])
    # A first trainer queues a segment while no validator answers at all.
    dead = publishing.Publisher(tmp_path, validator_url="http://127.0.0.1:9", initial_backoff=0.01)
    dead.enqueue(_signed(0))
    assert dead.depth() == 1
    # A restarted trainer finds it in the outbox and delivers it through 503s.
    pub = publishing.Publisher(tmp_path, validator_url=url, initial_backoff=0.01, max_backoff=0.05)
    pub.start()
    pub.enqueue(_signed(1))
    assert pub.close(timeout=10) == 0
    assert len(handler.bodies) == 2
    assert sorted(p.name for p in (tmp_path / "sent").iterdir()) == [
        "00000000.json",
        "00000001.json",
    ]


def test_publisher_sets_refused_segments_aside(
    tmp_path: Path, validator: tuple[str, type[_Validator]]
) -> None:
    url, handler = validator
    handler.codes.append(400)
    pub = publishing.Publisher(tmp_path, validator_url=url, initial_backoff=0.01)
    pub.start()
    pub.enqueue(_signed(0))
    assert pub.close(timeout=10) == 0
    assert (tmp_path / "rejected" / "00000000.json").exists()


def test_publisher_resends_until_committed(
    tmp_path: Path, validator: tuple[str, type[_Validator]]
) -> None:
    url, handler = validator
    handler.pending.extend([True, True])  # 202 but not yet ordered: send it again
    pub = publishing.Publisher(tmp_path, validator_url=url, initial_backoff=0.01)
    pub.start()
    pub.enqueue(_signed(0))
    assert pub.close(timeout=10) == 0
    assert len(handler.bodies) == 3
    assert (tmp_path / "sent" / "00000000.json").exists()


def test_decided_reads_the_validators_task_view() -> None:
    view = {"phase": "Verifying", "miners": {"0xAbC": {"verified": 1, "rejected": 1}}}
    assert publishing.decided(view, "0xabc", 2)
    assert not publishing.decided(view, "0xabc", 3)
    assert not publishing.decided(view, "0xdef", 1)
    assert publishing.decided({"phase": "Allocated", "miners": {}}, "0xdef", 1)
    assert not publishing.decided(None, "0xabc", 0)


def test_segments_dir_never_overwrites_a_different_body(tmp_path: Path) -> None:
    pub = publishing.Publisher(tmp_path / "state", segments_dir=tmp_path / "out")
    pub.start()
    pub.enqueue(_signed(0))
    deadline = time.monotonic() + 10
    while pub.depth() and time.monotonic() < deadline:
        time.sleep(0.01)
    (tmp_path / "state" / "sent" / "00000000.json").unlink()
    pub.enqueue(_signed(0))  # same index, another signature: a duplicate
    assert pub.close(timeout=10) == 0
    assert pub.duplicates == 1


def test_server_serves_blobs_and_metrics(tmp_path: Path) -> None:
    blobs = store.FilesystemStore(tmp_path)
    cid = blobs.put(b"checkpoint bytes")
    server = serving.Server(blobs, host="127.0.0.1", port=0).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert store.HttpStore(base).get(cid) == b"checkpoint bytes"
        with urllib.request.urlopen(f"{base}/metrics", timeout=10) as resp:
            assert b"pot_trainer_queue_depth" in resp.read()
    finally:
        server.stop()
