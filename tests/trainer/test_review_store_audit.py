"""Who a failed fetch is blamed on: the miner's store and its ``storeUrl`` are the miner's
(``MISSING_BLOB``, slashed), the validator's cache is the validator's (never the miner's).

Real parts: the daemon's ``ReplayAuditor``, a trainer node's store server on loopback, a
real cache directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from pot import keys, store
from pot.trainer import checkpoints, models, segments, serving, tasks, verification
from pot.validator import auditing

from .conftest import TASK, UID, solo_start


def _spec() -> dict[str, Any]:
    return {
        "model": {"name": "mlp-regression", "config": {"hidden": 8, "depth": 1, "features": 4}},
        "dataset": {"name": "synthetic-regression", "samples": 64},
        "hyperparameters": {"lr": 0.01, "batchSize": 4, "steps": 4, "seed": 3},
        "resources": {"nodes": 1},
        "proof": {"segmentSteps": 2},
    }


def _first_segment(blobs: store.FilesystemStore, store_url: str) -> segments.Segment:
    """Segment 0 of an honest run of ``_spec``, its checkpoints in ``blobs``."""
    spec = tasks.from_spec(_spec(), uid=UID)
    built = models.build(spec)
    _, start, dspec = solo_start(spec, built)
    end, losses = verification.replay(
        built, spec, dspec, start, steps=2, device=torch.device("cpu")
    )
    seg = segments.Segment(
        task=TASK,
        index=0,
        node_rank=0,
        miner="0x" + "00" * 20,
        start_step=0,
        steps=2,
        start_cid=blobs.put(checkpoints.encode(start)),
        end_cid=blobs.put(checkpoints.encode(end)),
        data_spec=dspec.record(),
        hyperparams_hash=spec.hyperparams_hash(),
        losses=tuple(losses),
        world=segments.World(nnodes=1, nproc_per_node=1),
        final=False,
        metrics={},
        store_url=store_url,
    )
    verification.clear_caches()
    return segments.sign(seg, keys.generate())


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[store.FilesystemStore, str]]:
    """The miner's store, served the way a trainer node serves it."""
    blobs = store.FilesystemStore(tmp_path / "miner")
    server = serving.Server(blobs, host="127.0.0.1", port=0).start()
    try:
        yield blobs, f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


def _audit(cache: Path, seg: segments.Segment) -> tuple[bool, str]:
    return auditing.ReplayAuditor(cache).audit(TASK, _spec(), UID, seg.record())


@pytest.mark.parametrize("url", ["", "ftp://127.0.0.1:9/", "http://a..b", "http://[::1"])
def test_a_store_url_nobody_can_fetch_from_is_the_miners_fault(tmp_path: Path, url: str) -> None:
    """It was ``AUDIT_ERROR`` (urllib's ValueError, the IDNA codec's UnicodeError), which is
    never slashed: a forged segment with ``"storeUrl": ""`` dodged its slash."""
    seg = _first_segment(store.FilesystemStore(tmp_path / "miner"), url)
    assert _audit(tmp_path / "cache", seg) == (False, "MISSING_BLOB")


def test_a_corrupt_copy_in_the_validators_cache_is_not_the_miners_fault(
    tmp_path: Path, served: tuple[store.FilesystemStore, str]
) -> None:
    """A rotten cache file (a torn disk, bit rot) was ``CORRUPT_BLOB``: an honest miner
    slashed for the validator's disk. The copy is fetched again and the cache repaired."""
    blobs, url = served
    seg = _first_segment(blobs, url)
    cache = store.FilesystemStore(tmp_path / "cache")
    cache.path(seg.start_cid).parent.mkdir(parents=True)
    cache.path(seg.start_cid).write_bytes(b"rotten")
    assert _audit(cache.root, seg) == (True, "")
    assert cache.get(seg.start_cid) == blobs.get(seg.start_cid)


def test_a_cache_the_validator_cannot_write_does_not_fail_the_audit(
    tmp_path: Path, served: tuple[store.FilesystemStore, str]
) -> None:
    """A full or read-only cache is the validator's problem: the blobs it fetched are
    verified in memory and used (it was ``AUDIT_ERROR``: an honest miner went unpaid)."""
    blobs, url = served
    seg = _first_segment(blobs, url)
    cache = tmp_path / "cache"
    cache.mkdir()
    for cid in (seg.start_cid, seg.end_cid):
        (cache / cid[-2:]).write_bytes(b"")  # a file where the shard directory goes
    assert _audit(cache, seg) == (True, "")
