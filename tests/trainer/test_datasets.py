"""``spec.dataset.cid``: training on a blob from the content store, and auditing it.

The trainer reads the dataset from its own store; a validator gets it, like the
checkpoints, from the miner's ``storeUrl`` through its local cache (tested here
with the real ``ReplayAuditor`` over HTTP). A missing or corrupt blob is one
clear error naming ``spec.dataset.cid`` on the trainer, and a named rejection
(``MISSING_BLOB`` / ``CORRUPT_BLOB``) at a validator that has not built the
task yet.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import torch

from pot import errors, store
from pot.trainer import segments, serving, tasks, verification
from pot.validator import auditing

from .conftest import TASK, UID, Run, free_port, new_run, run_cli_alone, torchrun, train_local

R = segments.Rejection


def _csv(rows: int = 640, features: int = 4) -> bytes:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, features, generator=gen)
    y = torch.tanh(x @ torch.randn(features, 1, generator=gen))
    return "".join(
        ",".join(f"{v:.6f}" for v in [*xs, ys]) + "\n"
        for xs, ys in zip(x.tolist(), y[:, 0].tolist(), strict=True)
    ).encode()


def _spec(cid: str, steps: int = 90, k: int = 30) -> dict[str, Any]:
    return {
        "model": {"name": "mlp-regression", "config": {"hidden": 32}},
        "dataset": {"cid": cid},
        "hyperparameters": {"lr": 0.01, "batchSize": 16, "steps": steps, "seed": 4},
        "resources": {"nodes": 1},
        "proof": {"segmentSteps": k},
    }


def _segments(run: Run) -> list[segments.Segment]:
    return [segments.parse(p.read_bytes()) for p in run.segment_files()]


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A 2-rank torchrun of mlp-regression on a CSV blob put in the trainer's store."""
    root = tmp_path_factory.mktemp("csv")
    blob = _csv()
    cid = store.FilesystemStore(root / "store").put(blob)
    run = new_run(root, _spec(cid), advertise=f"http://127.0.0.1:{free_port()}")
    torchrun(run)
    return run


@pytest.mark.slow
def test_trains_on_a_csv_blob_and_every_segment_replays(csv_run: Run) -> None:
    segs = _segments(csv_run)
    assert [s.index for s in segs] == [0, 1, 2]
    cid = csv_run.spec["dataset"]["cid"]
    assert segs[0].data_spec["dataset"] == cid
    assert segs[0].data_spec["datasetSize"] == 640 - 64  # 10% held out for evalLoss
    losses = [x for s in segs for x in s.losses]
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10, losses
    verification.clear_caches()
    policy = csv_run.policy()
    blobs = store.FilesystemStore(csv_run.store)
    previous = None
    for seg in segs:
        policy.previous = previous
        verdict = verification.verify_segment(seg, blobs, policy)
        assert verdict.valid, (seg.index, verdict.line())
        previous = seg


@pytest.mark.slow
def test_validator_fetches_the_dataset_from_the_miner(csv_run: Run, tmp_path: Path) -> None:
    """The daemon's auditor starts with an empty cache: the dataset comes over HTTP."""
    port = urlsplit(csv_run.advertise).port
    assert port is not None
    server = serving.Server(store.FilesystemStore(csv_run.store), host="127.0.0.1", port=port)
    server.start()
    try:
        verification.clear_caches()
        auditor = auditing.ReplayAuditor(tmp_path / "cache")
        for seg in _segments(csv_run):
            assert auditor.audit(TASK, csv_run.validator_spec(), UID, seg.record()) == (True, "")
    finally:
        server.stop()
    assert store.FilesystemStore(tmp_path / "cache").has(csv_run.spec["dataset"]["cid"])


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_validator_names_a_missing_or_corrupt_dataset(
    csv_run: Run, tmp_path: Path, damage: str
) -> None:
    shutil.copytree(csv_run.store, tmp_path / "store")
    blobs = store.FilesystemStore(tmp_path / "store")
    path = blobs.path(csv_run.spec["dataset"]["cid"])
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:-10])
    verification.clear_caches()
    policy = csv_run.policy()
    verdict = verification.verify_segment(_segments(csv_run)[1], blobs, policy)
    assert verdict.reason is (R.MISSING_BLOB if damage == "missing" else R.CORRUPT_BLOB)
    assert verdict.detail.startswith("spec.dataset.cid: "), verdict.detail


@pytest.mark.usefixtures("local_env")
@pytest.mark.parametrize(
    ("damage", "error"),
    [
        ("missing", errors.BlobNotFound),
        ("corrupt", errors.BlobCorrupt),
        ("not-csv", errors.ConfigError),
    ],
)
def test_trainer_names_a_missing_or_corrupt_dataset(
    tmp_path: Path, damage: str, error: type[errors.PotError]
) -> None:
    blobs = store.FilesystemStore(tmp_path / "run" / "store")
    cid = blobs.put(b"nothing,to\nsee,here\n" if damage == "not-csv" else _csv())
    if damage == "missing":
        blobs.path(cid).unlink()
    elif damage == "corrupt":
        blobs.path(cid).write_bytes(b"1,2\n")
    with pytest.raises(error, match=r"^spec\.dataset\.cid: "):
        train_local(tmp_path / "run", _spec(cid, steps=20, k=10))
    # The failed start left no process group behind: the next run in this process works.
    good = tmp_path / "good"
    cid = store.FilesystemStore(good / "store").put(_csv())
    run = train_local(good, _spec(cid, steps=20, k=10))
    assert len(run.segment_files()) == 2


@pytest.mark.usefixtures("local_env")
def test_tiny_gpt_on_a_text_blob(tmp_path: Path) -> None:
    text = (
        "It is a truth universally acknowledged, that a single man in possession of a "
        "good fortune, must be in want of a wife. "
    ) * 20
    cid = store.FilesystemStore(tmp_path / "store").put(text.encode())
    spec = {
        "model": {
            "name": "tiny-gpt",
            "config": {"dModel": 16, "layers": 1, "heads": 2, "context": 16},
        },
        "dataset": {"cid": cid},
        "hyperparameters": {"lr": 0.003, "batchSize": 4, "steps": 20, "seed": 2},
        "resources": {"nodes": 1},
        "proof": {"segmentSteps": 10, "deterministic": True},
    }
    run = train_local(tmp_path, spec)
    verification.clear_caches()
    policy = verification.Policy(task=TASK, spec=tasks.from_spec(spec, uid=UID))
    blobs = store.FilesystemStore(run.store)
    verdicts = [verification.verify_segment(s, blobs, policy) for s in _segments(run)]
    assert [v.valid and v.distance == 0.0 for v in verdicts] == [True, True], [
        v.line() for v in verdicts
    ]
    latin1 = store.FilesystemStore(tmp_path / "bad" / "store").put("café".encode("latin-1") * 100)
    with pytest.raises(errors.ConfigError, match=r"^spec\.dataset\.cid: not UTF-8 text"):
        train_local(tmp_path / "bad", {**spec, "dataset": {"cid": latin1}})


@pytest.mark.slow
def test_trainer_prints_one_line_for_a_missing_dataset(tmp_path: Path) -> None:
    cid = store.FilesystemStore(tmp_path / "elsewhere").put(_csv())
    run = new_run(tmp_path, _spec(cid))
    out = run_cli_alone(run)
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: spec.dataset.cid: dataset {cid} not found"
    )
