"""Only the operator registers tasks: a registration must carry its signature over the task
and the spec's hash (peers.json "operator"), checked by every replica when it executes.

Why it matters: a task's spec decides who can earn its escrow, and task ids are guessable
(``keccak256("ns/name")``). Anyone who could reach a validator's API first could register
a task of their own under that id, train it, and be paid from the funder's escrow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pot import cids, errors, keys, signing
from pot.trainer import segments
from pot.validator import app as vapp
from pot.validator import auth, localnet, pbft
from pot.validator import messages as m
from tests.validator import node_kit

OPERATOR = keys.generate()
TASK = "farm/mlp"
UID = "uid-0"
SPEC = node_kit.SPEC


def _app(operator: str | None) -> vapp.App:
    return node_kit.app_of_four(operator)


def _execute(app: vapp.App, op: bytes, seq: int = 1) -> dict[str, Any]:
    ctx = pbft.ExecContext(seq=seq, view=0, batch_digest=bytes(32))
    result: dict[str, Any] = json.loads(app.execute(m.Request("c", seq, op), ctx))
    return result


def _sign(key: keys.Key, task: str, spec: dict[str, Any], miners: list[str] | None = None) -> str:
    return signing.sign_registration(key, task, spec, miners or (), UID)


def _register(spec: dict[str, Any], signature: str | None) -> bytes:
    body: dict[str, Any] = {"task": TASK, "spec": spec, "uid": UID}
    if signature is not None:
        body["signature"] = signature
    return vapp.op("register", **body)


def test_every_replica_orders_only_the_operators_registrations() -> None:
    app = _app(OPERATOR.address)
    good = _sign(OPERATOR, TASK, SPEC)
    other = _sign(keys.generate(), TASK, SPEC)
    forged_spec = {**SPEC, "reward": {"pool": "1000", "minerStake": "1"}}
    for op in (
        _register(SPEC, None),  # unsigned
        _register(SPEC, other),  # signed by someone else
        _register(forged_spec, good),  # the operator's signature over another spec
        _register(SPEC, "0x1234"),  # not a signature
    ):
        assert _execute(app, op) == {"ok": False, "reason": "NOT_OPERATOR"}
        assert TASK not in app.tasks
    assert _execute(app, _register(SPEC, good))["ok"] is True
    assert _execute(app, _register(SPEC, good), seq=2)["ok"] is True  # re-sent after a crash
    assert app.tasks[TASK]["spec"] == SPEC


def _segment(key: keys.Key, rank: int) -> bytes:
    seg = segments.sign(
        segments.Segment(
            task=TASK,
            index=0,
            node_rank=rank,
            miner=key.address,
            start_step=0,
            steps=20,
            start_cid=cids.cid_of(b"start"),
            end_cid=cids.cid_of(b"end"),
            data_spec={"seed": 0},
            hyperparams_hash="0x" + "00" * 32,
            losses=(0.5,) * 20,
            world=segments.World(nnodes=2, nproc_per_node=1),
            final=False,
            metrics={},
        ),
        key,
    )
    return vapp.op("segment", segment=seg.record())


def test_the_registration_binds_each_rank_to_its_miner() -> None:
    """A pod that races a gang member's segment to a validator, signed with its own key, earns
    nothing: the operator's registration already says whose rank it is."""
    miners = [keys.generate(), keys.generate()]
    addresses = [k.address for k in miners]
    spec = {**SPEC, "resources": {"nodes": 2}}
    app = _app(OPERATOR.address)
    sig = _sign(OPERATOR, TASK, spec, addresses)
    # The miners are part of what the operator signed: another list is not its registration.
    swapped = vapp.op(
        "register", task=TASK, spec=spec, uid=UID, miners=addresses[::-1], signature=sig
    )
    assert _execute(app, swapped)["reason"] == "NOT_OPERATOR"
    op = vapp.op("register", task=TASK, spec=spec, uid=UID, miners=addresses, signature=sig)
    assert _execute(app, op)["ok"] is True
    assert app.tasks[TASK]["ranks"] == {"0": addresses[0].lower(), "1": addresses[1].lower()}
    squatter = keys.generate()
    assert _execute(app, _segment(squatter, 1), seq=2)["reason"] == "UNKNOWN_MINER"
    assert _execute(app, _segment(miners[0], 1), seq=3)["reason"] == "UNKNOWN_MINER"
    assert _execute(app, _segment(miners[1], 1), seq=4).get("reason") != "UNKNOWN_MINER"
    # One address per node rank, or none.
    short = _sign(OPERATOR, "farm/short", spec, addresses[:1])
    bad = vapp.op(
        "register", task="farm/short", spec=spec, uid=UID, miners=addresses[:1], signature=short
    )
    assert _execute(app, bad, seq=5)["reason"] == "BAD_SPEC"


def test_a_set_that_names_no_operator_takes_any_registration() -> None:
    # Hand-made sets (tests, local experiments); the operator always names itself.
    assert _execute(_app(None), _register(SPEC, None))["ok"] is True


def test_a_registration_names_its_task_object() -> None:
    """Every replay of the task derives its run seed from the registered uid, so a
    registration without one cannot be ordered (a miner of a twin task could otherwise
    sign the twin's checkpoints as this one's)."""
    app = _app(None)
    for uid in (None, "", " uid-0", 7):
        body: dict[str, Any] = {"task": TASK, "spec": SPEC}
        if uid is not None:
            body["uid"] = uid
        result = _execute(app, vapp.op("register", **body))
        assert result["ok"] is False and result["reason"] == "BAD_SPEC", result
        assert result["detail"].startswith("uid:"), result
        assert TASK not in app.tasks


def test_the_signature_covers_the_canonical_spec() -> None:
    reordered = dict(reversed(list(SPEC.items())))
    assert signing.spec_hash(reordered) == signing.spec_hash(SPEC)
    sig = _sign(OPERATOR, TASK, SPEC)
    assert signing.registration_signer(sig, TASK, reordered, (), UID) == OPERATOR.address
    assert signing.registration_signer(sig, "farm/other", SPEC, (), UID) != OPERATOR.address


def test_a_new_object_under_an_old_name_is_told_apart() -> None:
    """Deleted and re-created under the same name (same spec, same miners): the validators
    must not answer "ok" and let the new object mirror the old one's progress and allocation
    (its on-chain id, from the name, may be settled already). The uid tells them apart, and
    the operator's signature covers it."""
    app = _app(OPERATOR.address)

    def register(uid: str, seq: int) -> dict[str, Any]:
        sig = signing.sign_registration(OPERATOR, TASK, SPEC, (), uid)
        op = vapp.op("register", task=TASK, spec=SPEC, uid=uid, signature=sig)
        return _execute(app, op, seq)

    assert register("uid-1", 1)["ok"] is True
    assert register("uid-1", 2)["ok"] is True  # the operator's retry: same object
    again = register("uid-2", 3)
    assert again["ok"] is False and again["reason"] == "TASK_EXISTS"
    assert "use a new name" in again["detail"]
    assert app.tasks[TASK]["uid"] == "uid-1"
    sig = signing.sign_registration(OPERATOR, TASK, SPEC, (), "uid-1")
    assert signing.registration_signer(sig, TASK, SPEC, (), "uid-2") != OPERATOR.address
    forged = vapp.op("register", task="farm/other", spec=SPEC, uid="uid-2", signature=sig)
    assert _execute(app, forged, 4)["reason"] == "NOT_OPERATOR"


def test_peers_json_names_the_operator_by_address(tmp_path: Path) -> None:
    path, _ = localnet.write_peers(tmp_path, 4, operator=OPERATOR.address)
    assert auth.load_peers(path).operator == OPERATOR.address
    doc = json.loads(path.read_text())
    doc["operator"] = "0xnothex"
    with pytest.raises(errors.ConfigError, match="operator must be a 0x-prefixed 20-byte address"):
        auth.parse_peers(doc, "peers.json")


@pytest.mark.slow
def test_the_api_refuses_unsigned_registrations_before_ordering_them(tmp_path: Path) -> None:
    net = localnet.LocalNet(tmp_path, 4, operator=OPERATOR.address)
    net.start()
    try:
        net.wait_ready()
        code, body = net.post(0, "/v1/tasks", {"id": TASK, "spec": SPEC, "uid": UID})
        assert code == 403 and body["field"] == "signature"
        assert OPERATOR.address in body["error"]
        stranger = _sign(keys.generate(), TASK, SPEC)
        doc = {"id": TASK, "spec": SPEC, "uid": UID, "signature": stranger}
        assert net.post(1, "/v1/tasks", doc)[0] == 403
        assert net.get(0, f"/v1/tasks/{TASK}")[0] == 404
        signed = _sign(OPERATOR, TASK, SPEC)
        # Without the uid it was signed over: refused at the door, naming the field.
        code, body = net.post(2, "/v1/tasks", {"id": TASK, "spec": SPEC, "signature": signed})
        assert code == 400 and body["field"] == "uid", body
        code, body = net.post(
            2, "/v1/tasks", {"id": TASK, "spec": SPEC, "uid": UID, "signature": signed}
        )
        assert code == 202, body
        for i in range(4):
            net.wait(lambda i=i: net.get(i, f"/v1/tasks/{TASK}")[0] == 200, timeout=30)
        # A later TrainingTask object under the same name: 409, naming why.
        later = signing.sign_registration(OPERATOR, TASK, SPEC, (), "uid-later")
        code, body = net.post(
            3, "/v1/tasks", {"id": TASK, "spec": SPEC, "uid": "uid-later", "signature": later}
        )
        assert code == 409 and body["field"] == "id" and "use a new name" in body["error"], body
    finally:
        net.close()
