"""Log before send (TOCS 2002 §6): a replica that voted, crashed and restarted never sends a
vote that contradicts one it sent before, and its next VIEW-CHANGE still reports what it
prepared. Run against the simulator's in-memory disk and the real on-disk log."""

from __future__ import annotations

import random
from pathlib import Path
from typing import TypeVar

import pytest

from pot import errors
from pot.validator import actions, pbft, persistence, simulating
from pot.validator import messages as m
from pot.validator.rejections import Rejection

M = TypeVar("M", bound=m.Message)
CFG = pbft.Config(n=4, f=1, open_clients=True, checkpoint_interval=16)
SECRETS = [bytes([i + 1]) * 32 for i in range(4)]


class _App:
    def __init__(self) -> None:
        self.done: list[bytes] = []

    def execute(self, request: m.Request, ctx: pbft.ExecContext) -> bytes:
        self.done.append(request.op)
        return b"ok"

    def snapshot(self) -> bytes:
        return b"|".join(self.done)

    def restore(self, data: bytes) -> None:
        self.done = data.split(b"|") if data else []


class _MemDisk:
    """The simulator's disk behind the same interface as ``persistence.Disk``."""

    def __init__(self) -> None:
        self.disk = simulating.Disk()

    def apply(self, a: actions.Action) -> None:
        self.disk.apply(a)

    def reload(self) -> actions.Durable | None:
        return self.disk.durable()


class _FileDisk:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.disk = persistence.Disk(root)
        assert self.disk.load() is None

    def apply(self, a: actions.Action) -> None:
        self.disk.apply(a)
        if isinstance(a, actions.Send):
            assert not self.disk.unsynced  # the shell syncs before anything is sent

    def reload(self) -> actions.Durable | None:
        self.disk.close()  # the process dies; what was synced is what is left
        self.disk = persistence.Disk(self.root)
        return self.disk.load()


def _replica(durable: actions.Durable | None = None) -> pbft.Replica:
    crypto = simulating.SimCrypto(1, SECRETS, random.Random(0))
    return pbft.Replica(config=CFG, replica_id=1, app=_App(), crypto=crypto, durable=durable)


def _run(rep: pbft.Replica, disk: _MemDisk | _FileDisk, outs: list[actions.Action]) -> None:
    for a in outs:
        if isinstance(a, actions.Send) and isinstance(disk, _FileDisk):
            disk.disk.sync()  # what replica.Node does before a send leaves (group commit)
        disk.apply(a)


def _pp(nonce: bytes, seq: int = 1, view: int = 0) -> m.PrePrepare:
    req = m.Request(client="c", ts=seq, op=b"op-" + nonce)
    return m.pre_prepare(view=view, seq=seq, nonce=nonce, batch=(req,), replica=view % 4)


def _votes(outs: list[actions.Action], kind: type[M]) -> list[M]:
    return [a.msg for a in outs if isinstance(a, actions.Send) and isinstance(a.msg, kind)]


@pytest.fixture(params=["memory", "file"])
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> _MemDisk | _FileDisk:
    return _MemDisk() if request.param == "memory" else _FileDisk(tmp_path)


def test_restarted_replica_refuses_a_conflicting_prepare(disk: _MemDisk | _FileDisk) -> None:
    rep = _replica()
    first, second = _pp(b"a"), _pp(b"b")  # an equivocating primary's two batches for (0, 1)
    outs = rep.on_message(first, 0)
    assert [p.digest for p in _votes(outs, m.Prepare)] == [first.digest]
    logged = [a for a in outs if isinstance(a, actions.Logged)]
    assert outs.index(logged[-1]) < outs.index(next(a for a in outs if isinstance(a, actions.Send)))
    _run(rep, disk, outs)

    back = _replica(disk.reload())  # crash, restart from disk
    outs = back.on_message(second, 0)
    assert not _votes(outs, m.Prepare)
    assert back.rejected[Rejection.EQUIVOCATION] == 1
    # Retransmission (to a peer stuck at 0 over two beacons) re-sends the vote it did send,
    # never another one.
    back.now = 10_000
    status = m.Status(view=0, normal=True, h=0, last_exec=0, replica=2)
    back.on_message(status, 2)
    again = _votes(back.on_message(status, 2), m.Prepare)
    assert [p.digest for p in again] == [first.digest]


def test_restarted_replica_keeps_its_commit_and_prepared_certificate(
    disk: _MemDisk | _FileDisk,
) -> None:
    rep = _replica()
    pp = _pp(b"a")
    outs = rep.on_message(pp, 0)
    for r in (2, 3):
        outs += rep.on_message(m.Prepare(view=0, seq=1, digest=pp.digest, replica=r), r)
    commits = _votes(outs, m.Commit)
    assert [c.digest for c in commits] == [pp.digest]
    _run(rep, disk, outs)

    back = _replica(disk.reload())
    assert back.pset[1] == (0, pp.digest) and back.log[1].sent_commit
    # Two more COMMITs commit it: the restarted replica counts its own from before the crash.
    outs = []
    for r in (0, 2):
        outs += back.on_message(m.Commit(view=0, seq=1, digest=pp.digest, replica=r), r)
    assert back.last_exec == 1 and not _votes(outs, m.Commit)  # no second COMMIT sent


def test_view_change_after_restart_reports_what_was_prepared(disk: _MemDisk | _FileDisk) -> None:
    rep = _replica()
    pp = _pp(b"a")
    outs = rep.on_message(pp, 0)
    for r in (2, 3):
        outs += rep.on_message(m.Prepare(view=0, seq=1, digest=pp.digest, replica=r), r)
    _run(rep, disk, outs)
    back = _replica(disk.reload())
    back.now = CFG.view_change_timeout_ms + 1
    vc = _votes(back.on_tick(back.now), m.ViewChange)[0]
    assert [(e.seq, e.digest, e.view) for e in vc.prepared] == [(1, pp.digest, 0)]
    assert [b.digest() for b in vc.batches] == [pp.digest]


def test_torn_log_tail_is_cut_and_the_rest_recovers(tmp_path: Path) -> None:
    disk = _FileDisk(tmp_path)
    rep = _replica()
    first = _pp(b"a")
    _run(rep, disk, rep.on_message(first, 0))
    disk.disk.sync()
    disk.disk.close()
    log = tmp_path / "pbft" / "log"
    whole = log.read_bytes()
    log.write_bytes(whole + whole[:7])  # a record cut short by the crash
    d2 = persistence.Disk(tmp_path)
    durable = d2.load()
    assert durable is not None and [p.digest for p in durable.accepted] == [first.digest]
    assert log.read_bytes() == whole
    back = _replica(durable)
    assert not _votes(back.on_message(_pp(b"b"), 0), m.Prepare)
    d2.close()


def test_restarted_replicas_count_as_correct_in_the_simulator() -> None:
    """With its votes logged, a crashed-and-restarted replica is a correct one (crash-recovery),
    not one of the f faulty: n=4 stays safe and live with a Byzantine replica *and* two
    restarted ones, n=7 with two Byzantine and three restarted."""
    for seed in range(30):
        for n, f, byz, restarted in (
            (4, 1, (seed % 4,), ((seed + 1) % 4, (seed + 2) % 4)),
            (7, 2, (seed % 7, (seed + 3) % 7), ((seed + 1) % 7, (seed + 2) % 7, (seed + 5) % 7)),
        ):
            sc = simulating.Scenario(
                n=n, f=f, seed=seed, byzantine=byz, restarted=restarted, partitions=seed % 3
            )
            r = simulating.simulate(sc)
            assert r.safe and r.live, (seed, n, r.violations)


def test_restarted_primary_proposes_nothing_more_in_its_crash_view(
    disk: _MemDisk | _FileDisk,
) -> None:
    """Its own PRE-PREPAREs are logged without holding up the send, so the last ones may be
    lost in a crash: proposing again in that view could reuse a sequence number."""
    crypto = simulating.SimCrypto(0, SECRETS, random.Random(0))
    primary = pbft.Replica(config=CFG, replica_id=0, app=_App(), crypto=crypto)
    outs = primary.submit(m.Request(client="c", ts=1, op=b"x"))
    (logged,) = [a for a in outs if isinstance(a, actions.Logged)]
    assert isinstance(logged.msg, m.PrePrepare) and not logged.gate
    _run(primary, disk, outs)
    back = pbft.Replica(config=CFG, replica_id=0, app=_App(), crypto=crypto, durable=disk.reload())
    assert not back.ready
    assert not _votes(back.submit(m.Request(client="c", ts=2, op=b"y")), m.PrePrepare)


def test_a_log_in_another_format_is_refused_naming_the_file_not_cut(tmp_path: Path) -> None:
    """An old or foreign log holds votes too: starting on it as if it were a torn tail would
    forget them."""
    log = tmp_path / "pbft" / "log"
    log.parent.mkdir(parents=True)
    old = b'{"type": "prepare", "view": 0, "seq": 1}\n'  # what version 1 wrote (JSON lines)
    log.write_bytes(old)
    with pytest.raises(errors.ConfigError, match=r"pbft/log: not a PBFT log in this version"):
        persistence.Disk(tmp_path).load()
    assert log.read_bytes() == old  # untouched


def test_a_crash_while_writing_the_header_leaves_a_fresh_log(tmp_path: Path) -> None:
    log = tmp_path / "pbft" / "log"
    log.parent.mkdir(parents=True)
    log.write_bytes(persistence.MAGIC[:3])
    disk = persistence.Disk(tmp_path)
    assert disk.load() is None
    disk.apply(actions.Logged(_pp(b"a")))
    disk.sync()
    disk.close()
    assert log.read_bytes().startswith(persistence.MAGIC)
    durable = persistence.Disk(tmp_path).load()
    assert durable is not None and [p.digest for p in durable.accepted] == [_pp(b"a").digest]


class _Crash(BaseException):
    """The process dies here (a BaseException, as nothing may catch it on the way out)."""


@pytest.mark.parametrize("crash_at", [1, 2, 3], ids=["snapshot", "pointer", "cleanup"])
def test_a_crash_while_saving_a_checkpoint_keeps_a_whole_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_at: int
) -> None:
    """Regression: ``stable.snap`` and ``stable.json`` were two renames; a crash between them
    left the new snapshot beside the old digest, and the replica restarted from seq 0."""
    disk = persistence.Disk(tmp_path)
    assert disk.load() is None
    old, new = b"state at 16", b"state at 32"
    disk.apply(actions.Stable(16, m.sha256(old), old))
    writes = 0
    real_write, real_unlink = persistence.files.write_atomic, Path.unlink

    def write_atomic(path: Path, data: bytes) -> None:
        nonlocal writes
        writes += 1
        if writes == crash_at:
            raise _Crash
        real_write(path, data)

    def unlink(path: Path, missing_ok: bool = False) -> None:
        if crash_at == 3:
            raise _Crash
        real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(persistence.files, "write_atomic", write_atomic)
    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(_Crash):
        disk.apply(actions.Stable(32, m.sha256(new), new))
    monkeypatch.undo()
    durable = persistence.Disk(tmp_path).load()
    assert durable is not None
    assert (durable.seq, durable.snapshot) == ((16, old) if crash_at < 3 else (32, new))
    assert durable.digest == m.sha256(durable.snapshot)


def test_a_checkpoint_saved_by_the_previous_layout_still_loads(tmp_path: Path) -> None:
    snap = b"state at 16"
    pbft_dir = tmp_path / "pbft"
    pbft_dir.mkdir()
    (pbft_dir / "stable.snap").write_bytes(snap)
    (pbft_dir / "stable.json").write_text(f'{{"seq": 16, "digest": "{m.sha256(snap).hex()}"}}')
    disk = persistence.Disk(tmp_path)
    durable = disk.load()
    assert durable is not None and (durable.seq, durable.snapshot) == (16, snap)
    new = b"state at 32"
    disk.apply(actions.Stable(32, m.sha256(new), new))
    disk.close()
    assert sorted(p.name for p in pbft_dir.glob("stable*")) == ["stable-32.snap", "stable.json"]
