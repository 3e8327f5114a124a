"""Checkpoint snapshots (docs/protocol.md "Digests"): the application's bytes ride as they are,
a snapshot that is not one is refused without touching the replica, and a replica whose stable
snapshot on disk cannot be installed says which directory to move away."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from pot import errors
from pot.validator import (
    actions,
    auditing,
    auth,
    checkpointing,
    localnet,
    pbft,
    replica,
    simulating,
)
from pot.validator import messages as m
from pot.validator.persistence import Disk


def _replica() -> tuple[pbft.Replica, simulating.ChainApp]:
    app = simulating.ChainApp()
    rep = pbft.Replica(
        config=pbft.Config(n=4, f=1, open_clients=True),
        replica_id=1,
        app=app,
        crypto=simulating.SimCrypto(1, [bytes([i]) * 32 for i in range(4)], random.Random(1)),
    )
    return rep, app


def test_snapshot_carries_the_application_bytes_verbatim_and_round_trips() -> None:
    rep, app = _replica()
    for ts in range(5):
        app.execute(m.Request(client="c", ts=ts, op=b"x"), pbft.ExecContext(1, 0, b"\0" * 32))
    rep.dedup = {"c": (-1, {0, 1, 2, 3, 4}), "r2": (7, {9})}
    snap = checkpointing.snapshot(rep)
    assert snap.startswith(checkpointing.SNAPSHOT_MAGIC)
    assert snap.endswith(app.snapshot())  # not hex: half the bytes on disk and on the wire

    other, other_app = _replica()
    checkpointing.restore(other, snap)
    assert other.dedup == rep.dedup and other_app.snapshot() == app.snapshot()
    assert checkpointing.snapshot(other) == snap  # same state, same digest


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b'{"app":"00","dedup":{}}',  # the older, hex-in-JSON format
        checkpointing.SNAPSHOT_MAGIC + b"\0\0",  # length cut short
        checkpointing.SNAPSHOT_MAGIC + b"\0\0\0\x09{}",  # claims more than it has
        checkpointing.SNAPSHOT_MAGIC + b"\0\0\0\x02[]",  # windows not an object
    ],
)
def test_a_bad_snapshot_is_refused_and_changes_nothing(bad: bytes) -> None:
    rep, _ = _replica()
    rep.dedup = {"c": (-1, {1})}
    before = checkpointing.snapshot(rep)
    with pytest.raises(ValueError):
        checkpointing.restore(rep, bad)
    assert checkpointing.snapshot(rep) == before


def test_a_replica_with_an_unreadable_stable_snapshot_names_its_data_dir(tmp_path: Path) -> None:
    config, keys_ = localnet.write_peers(tmp_path, 4)
    data = tmp_path / "data-0"
    disk = Disk(data)
    disk.load()
    junk = b'{"app":"00","dedup":{}}'  # e.g. left by an older version
    disk.apply(actions.Stable(seq=64, digest=m.sha256(junk), snapshot=junk))
    disk.close()
    with pytest.raises(errors.ConfigError, match=r"data-0.*move this directory away"):
        replica.Node(
            peers=auth.load_peers(config),
            me=0,
            key=keys_[0],
            data_dir=data,
            auditor=auditing.Scripted(),
        )
