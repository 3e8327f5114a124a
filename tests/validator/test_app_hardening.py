"""Requests a faulty replica or a dishonest miner can get ordered, refused the same way on
every replica: too deep to decode, a second spelling of an address, a segment after the
audit quorum, and keys that would only grow the state. Pure, except the depth test, which
runs in a child process (a regression could be a segfault, not an exception).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from pot import keys, signing
from pot.trainer import segments
from pot.validator import app as vapp
from pot.validator import verdicts
from tests.validator.test_app_restore import made
from tests.validator.test_chaining import REPLICAS, TASK, Replica, seg
from tests.validator.test_verdicts import vote

_DEEP = """
from pot.validator import app as vapp, messages as m, pbft
v = vapp.Validators(addresses=(), stakes=(), chain_id=1, contract="0x" + "11" * 20, f=0)
d = 100_000
op = b'{"op":"segment","segment":' + b"[" * d + b"]" * d + b"}"
ctx = pbft.ExecContext(seq=1, view=0, batch_digest=bytes(32))
print(vapp.App(v).execute(m.Request(client="r3", ts=1, op=op), ctx).decode())
"""


def test_a_deeply_nested_op_is_refused_before_decoding() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _DEEP], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"reason":"MALFORMED"' in done.stdout


def test_depth_within_the_bound_still_decodes() -> None:
    r = Replica()
    nested = b"[" * (vapp.MAX_OP_DEPTH - 2) + b"]" * (vapp.MAX_OP_DEPTH - 2)
    op = b'{"op":"segment","segment":' + nested + b"}"
    # Decoded, then refused by the segment parser (a list is no segment), not by depth.
    assert r.execute(op) == {"ok": False, "reason": "MALFORMED"}
    assert r.execute(vapp.op("nothing")) == {"ok": False, "reason": "MALFORMED"}


def test_a_lower_case_spelling_does_not_split_a_miner() -> None:
    """The miner signs one segment under its lower-case address; it is rejected, and the
    miner is slashed and paid nothing under every spelling."""
    r, cheat, honest = Replica(nodes=2), keys.generate(), keys.generate()
    cheats = [made(cheat, i, final=i == 2, lower=i == 1) for i in range(3)]
    fair = [made(honest, i, rank=1, final=i == 2) for i in range(3)]
    for s in (*cheats, *fair):
        assert r.submit(s)["ok"]
    for s in (cheats[0], cheats[2], fair[0], fair[2]):
        r.verdicts(s, True)
    for i in range(3):
        vote(r, cheats[1], i, False, "LOSS_MISMATCH")
    r.audited()
    alloc = r.task["allocation"]
    assert alloc["slashed"] == [cheat.address]
    assert cheat.address.lower() not in [p.lower() for p in alloc["payees"]]
    assert honest.address in alloc["payees"]
    view = r.app.view(TASK)
    assert view is not None
    assert view["miners"][cheat.address]["segments"] == 3
    assert sorted(view["miners"]) == sorted([cheat.address, honest.address])
    assert {x["miner"] for x in view["rejections"]} == {cheat.address}


def _audited(r: Replica, replicas: range) -> list[dict[str, object]]:
    out = []
    for i in replicas:
        sig = signing.sign(
            REPLICAS[i], verdicts.VERDICT_DOMAIN, verdicts.AUDITED_TYPES, "Audited", {"task": TASK}
        )
        out.append(r.execute(vapp.op("audited", task=TASK, replica=i, signature=sig)))
    return out


def test_segments_after_the_audit_quorum_are_refused() -> None:
    """A segment that arrived after 2f+1 ``audited`` was paid without anyone's private draw."""
    r, miner = Replica(segments=10), keys.generate()
    for i in range(4):
        assert r.submit(made(miner, i))["ok"]
    final = made(miner, 9, final=True, loss=0.1)
    assert r.submit(final)["ok"]
    r.verdicts(made(miner, 0), True)
    r.audited()
    assert r.task["allocation"] is None  # the final still waits for its public verdicts
    for i in range(4, 9):
        assert r.submit(made(miner, i)) == {"ok": False, "reason": "TASK_CLOSED"}
    assert r.submit(made(miner, 3))["duplicate"] is True  # a trainer's retry is still fine
    r.verdicts(final, True)
    assert r.task["allocation"] is not None
    view = r.app.view(TASK)
    assert view is not None
    assert view["progress"]["segmentsCommitted"] == 5  # 0..3 and the final: none of 4..8


def test_a_segment_after_some_audited_is_public() -> None:
    """Replicas that already said ``audited`` will not draw for it: everyone replays it."""
    r, miner = Replica(), keys.generate()
    for i in (0, 2):
        assert r.submit(seg(miner, i, f"c{i}", f"c{i + 1}"))["ok"]  # 2 is final
    _audited(r, range(1))
    late = seg(miner, 1, "c1", "c2")  # the gap, filled late
    assert r.submit(late)["sampled"] is True
    r.verdicts(seg(miner, 0, "c0", "c1"), True)
    r.verdicts(seg(miner, 2, "c2", "c3"), True)
    _audited(r, range(1, 3))
    assert r.task["allocation"] is None  # waits for the late segment's public replays
    r.verdicts(late, True)
    assert r.task["allocation"] is not None


def test_audited_before_every_final_is_in_is_refused() -> None:
    r, miner = Replica(), keys.generate()
    assert r.submit(seg(miner, 0, "c0", "c1"))["ok"]
    assert _audited(r, range(3)) == [{"ok": False, "reason": "NOT_READY"}] * 3
    assert "audited" not in r.task
    assert r.submit(seg(miner, 1, "c1", "c2"))["sampled"] is False


def test_out_of_range_ranks_do_not_bind() -> None:
    r = Replica(nodes=2)
    before = r.app.snapshot()
    for rank in (2, 10**6):
        key = keys.generate()
        s = seg(key, 0, "a", "b", rank=rank)
        s = segments.sign(
            dataclasses.replace(s, world=segments.World(nnodes=10**7, nproc_per_node=1)), key
        )
        assert r.submit(s) == {"ok": False, "reason": "UNKNOWN_MINER"}
    assert r.task["ranks"] == {}
    assert r.app.snapshot() == before


def test_repeated_refusals_are_listed_once_and_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    r, miner = Replica(segments=70), keys.generate()
    assert r.submit(seg(miner, 0, "c0", "c1", last=69))["ok"]
    for _ in range(3):
        assert r.submit(seg(miner, 0, "c0", "other", last=69))["reason"] == "CONFLICTING_SEGMENT"
    assert len(r.task["rejections"]) == 1
    monkeypatch.setattr(vapp, "MAX_REJECTIONS", 3)
    for base in range(10, 70, 10):
        assert r.submit(seg(miner, base, "a", "b", last=69))["ok"]
        assert r.submit(seg(miner, base + 1, "c", "d", last=69))["reason"] == "BROKEN_CHAIN"
    assert len(r.task["rejections"]) == 3


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"index": 3, "start_step": 60}, "covers steps from 60 of 60"),  # past the last segment
        ({"index": 10**6, "start_step": 20 * 10**6}, "covers steps"),
        ({"start_step": 5}, "covers steps from 20"),
        ({"steps": 19, "losses": (0.5,) * 19}, "must have 20 steps"),
        ({"final": True, "metrics": {"evalLoss": 0.1}}, "final is true"),
    ],
)
def test_a_segment_the_task_cannot_have_is_refused_at_the_door(
    change: dict[str, object], detail: str
) -> None:
    """Spec-only shape checks before anything is stored: a registered miner cannot park
    segments at any index it likes (each one ~1 KB of replicated state, kept for good)."""
    r, miner = Replica(), keys.generate()
    before = r.app.snapshot()
    bad = segments.sign(dataclasses.replace(seg(miner, 1, "c1", "c2"), **change), miner)  # type: ignore[arg-type]
    got = r.submit(bad)
    assert got["reason"] == "STEP_GAP" and detail in got["detail"], got
    assert r.app.snapshot() == before
    assert r.submit(seg(miner, 1, "c1", "c2"))["ok"]
