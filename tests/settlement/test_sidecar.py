"""The sidecar in-process against a fake validator, on anvil and the in-process EVM:
settles once, counts a lost race as done, survives a reorg, bumps a stuck fee, and counts
``confirmations`` as blocks on top of the settle's block.

The dev chains mine one block per transaction and nothing else, so a test mines the block
that confirms a settle itself (``w.dev.mine``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from pot import errors, keys
from pot.settlement import allocations, contracts, intents, sending, sidecar

from .conftest import ETH, FakeValidator, World


def make_sidecar(
    w: World, v: FakeValidator, state: Path, *, key: keys.Key | None = None, **kw: object
) -> sidecar.Sidecar:
    key = key or w.key(10 * ETH)
    cfg = sidecar.Config(
        validator_url=v.url,
        rpc_url=w.dev.url,
        contract=w.address,
        state_dir=state,
        chain_id=w.chain_id,
        **kw,
    )  # type: ignore[arg-type]
    return sidecar.Sidecar(config=cfg, key=key)


def tick(car: sidecar.Sidecar) -> None:
    """One turn of ``car``, repeated while a transaction's nonce shows as used before its
    receipt does: anvil stores the receipt a moment after the state under load, and the
    sender waits that out across polls (``orphan_grace``) rather than deciding."""
    car.tick()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
        i.orphaned_at and i.state == "sending" for i in car.intent_log.all()
    ):
        time.sleep(0.05)
        car.tick()


def publish_round(
    w: World, v: FakeValidator, n_payees: int = 3, **kw: object
) -> allocations.Allocation:
    task = w.task()
    w.fund_task(task, 10 * ETH)
    alloc = allocations.Allocation(
        task=task,
        round=0,
        payees=tuple(keys.generate().address for _ in range(n_payees)),
        amounts=tuple(ETH + i for i in range(n_payees)),
        **kw,
    )  # type: ignore[arg-type]
    v.publish(w.alloc_json(alloc))
    return alloc


def outcome(car: sidecar.Sidecar, name: str) -> float:
    return (
        car.metrics.registry.get_sample_value("pot_settlement_intents_total", {"outcome": name})
        or 0.0
    )


def test_settles_once_and_counts_duplicate_as_done(
    world: World, validator: FakeValidator, tmp_path: Path
) -> None:
    w = world
    alloc = publish_round(w, validator)
    a = make_sidecar(w, validator, tmp_path / "a")
    tick(a)
    w.dev.mine(1)  # the one block on top that the default confirmations=1 asks for
    tick(a)
    [intent] = a.intent_log.all()
    assert intent.state == "final", intent
    for p, amount in zip(alloc.payees, alloc.amounts, strict=True):
        assert w.credit(p) == amount
    # A second replica's sidecar arrives late: the chain says settled, so it is done too.
    b = make_sidecar(w, validator, tmp_path / "b")
    tick(b)
    [late] = b.intent_log.all()
    assert late.state == "already" and outcome(b, "already") == 1
    # and a direct settle of the same (task, round) reverts with the named error, which the
    # sender also counts as done (no transaction is sent)
    fresh = b.sender.open(
        alloc,
        allocations.quorum(
            alloc,
            [(k.address, allocations.sign(k, alloc, w.chain_id, w.address)) for k in w.validators],
            chain_id=w.chain_id,
            contract=w.address,
            registered=[k.address for k in w.validators],
            threshold=3,
        )[0],
        w.deployer.address,
    )
    assert fresh.state == "already" and not fresh.attempts
    assert len(w.settled_events(alloc.task, 0)) == 1
    text = __import__("prometheus_client").generate_latest(a.metrics.registry).decode()
    assert 'pot_settlement_intents_total{outcome="final"} 1.0' in text


def test_waits_for_quorum_and_drops_bad_signatures(
    world: World, validator: FakeValidator, tmp_path: Path
) -> None:
    w = world
    alloc = publish_round(w, validator)
    doc = w.alloc_json(alloc, w.validators[:2])
    outsider = keys.generate()
    doc["signatures"].append(
        {
            "signer": outsider.address,
            "signature": allocations.sign(outsider, alloc, w.chain_id, w.address),
        }
    )
    doc["signatures"].append({"signer": w.validators[3].address, "signature": "0x1234"})
    validator.publish(doc)
    car = make_sidecar(w, validator, tmp_path)
    tick(car)
    assert car.intent_log.all() == []  # 2 good signatures of 3 needed: wait
    validator.publish(w.alloc_json(alloc, w.validators[1:]))
    tick(car)
    w.dev.mine(1)
    tick(car)
    assert [i.state for i in car.intent_log.all()] == ["final"]


def test_rejected_allocation_is_named_and_not_sent(
    world: World, validator: FakeValidator, tmp_path: Path
) -> None:
    w = world
    alloc = allocations.Allocation(
        task=w.task(), round=0, payees=(keys.generate().address,), amounts=(ETH,)
    )
    validator.publish(w.alloc_json(alloc))
    car = make_sidecar(w, validator, tmp_path)
    tick(car)
    assert car.intent_log.all() == []  # nobody funded the task: nothing to send yet
    w.fund_task(alloc.task, ETH // 2)  # too little
    tick(car)
    [intent] = car.intent_log.all()
    assert (intent.state, intent.error, intent.attempts) == ("rejected", "InsufficientEscrow", [])
    assert (
        car.metrics.registry.get_sample_value(
            "pot_settlement_rejections_total", {"error": "InsufficientEscrow"}
        )
        == 1
    )


def test_two_racing_sidecars_one_effective_settle(
    world: World, validator: FakeValidator, tmp_path: Path
) -> None:
    """Both broadcast before either is mined; one settle lands, the other reverts and is done."""
    w = world
    alloc = publish_round(w, validator)
    a = make_sidecar(w, validator, tmp_path / "a")
    b = make_sidecar(w, validator, tmp_path / "b")
    w.dev.set_automine(False)
    try:
        tick(a)
        tick(b)
        assert [len(i.attempts) for i in (*a.intent_log.all(), *b.intent_log.all())] == [1, 1]
    finally:
        w.dev.set_automine(True)
    w.dev.mine(2)  # both settles in the first block, one block on top
    tick(a)
    tick(b)
    states = sorted(i.state for i in (*a.intent_log.all(), *b.intent_log.all()))
    assert states == ["already", "final"]
    assert len(w.settled_events(alloc.task, 0)) == 1
    for p, amount in zip(alloc.payees, alloc.amounts, strict=True):
        assert w.credit(p) == amount


def test_reorg_drops_settle_then_resubmitted_and_final(
    world: World, validator: FakeValidator, tmp_path: Path
) -> None:
    w = world
    alloc = publish_round(w, validator)
    car = make_sidecar(w, validator, tmp_path, confirmations=3)
    snap = w.dev.snapshot() if w.dev.kind == "evm" else ""
    tick(car)  # broadcast; mined at once (automine)
    tick(car)  # receipt seen: 0 of 3 blocks on top
    [intent] = car.intent_log.all()
    assert intent.state == "mined"
    mined_hash, mined_block = intent.tx_hash, intent.block_hash
    if w.dev.kind == "anvil":
        w.dev.reorg(1)  # anvil_reorg: the settle's block is replaced by an empty one
    else:
        w.dev.revert(snap)  # the EVM: roll back past the settle block
        w.dev.mine(1)
    assert not w.settled_events(alloc.task, 0)
    tick(car)  # notices, rebroadcasts the same transaction
    assert car.metrics.registry.get_sample_value("pot_settlement_reorgs_total") == 1
    w.dev.mine(3)
    tick(car)
    [intent] = car.intent_log.all()
    assert intent.state == "final"
    assert intent.tx_hash == mined_hash and intent.block_hash != mined_block
    assert len(intent.attempts) == 1
    assert len(w.settled_events(alloc.task, 0)) == 1
    for p, amount in zip(alloc.payees, alloc.amounts, strict=True):
        assert w.credit(p) == amount


def test_stuck_transaction_fee_bump(world: World, validator: FakeValidator, tmp_path: Path) -> None:
    w = world
    alloc = publish_round(w, validator)
    car = make_sidecar(w, validator, tmp_path, stuck_after=0.01)
    w.dev.set_automine(False)
    try:
        tick(car)
        time.sleep(0.05)
        tick(car)  # no receipt after stuck_after: replace with higher fees
    finally:
        w.dev.set_automine(True)
    w.dev.mine(2)  # the replacement, then one block on top
    tick(car)
    [intent] = car.intent_log.all()
    assert intent.state == "final"
    first, second = intent.attempts[0], intent.attempts[-1]
    assert len(intent.attempts) >= 2
    assert second.max_fee > first.max_fee * 1.125 and second.tip > first.tip * 1.125
    assert intent.tx_hash == second.tx_hash
    assert len(w.settled_events(alloc.task, 0)) == 1


def _reorg_head(w: World, snap: str) -> None:
    """Replace the head block (the settle's) by an empty one."""
    if w.dev.kind == "anvil":
        w.dev.reorg(1)  # anvil_reorg, the real thing
    else:
        w.dev.revert(snap)  # the EVM: roll back past the settle block, mine an empty one
        w.dev.mine(1)


def test_default_confirmation_waits_for_a_block_on_top_and_survives_a_head_reorg(
    world: World, validator: FakeValidator, tmp_path: Path
) -> None:
    """confirmations=1 means one block on top: a settle in the head block is not final yet,
    so a reorg of that block is noticed and the settle sent again, not lost."""
    w = world
    alloc = publish_round(w, validator)
    car = make_sidecar(w, validator, tmp_path)  # default confirmations
    assert car.config.confirmations == 1
    snap = w.dev.snapshot() if w.dev.kind == "evm" else ""
    tick(car)  # broadcast, mined at once in the new head block
    tick(car)
    [intent] = car.intent_log.all()
    assert intent.state == "mined", intent  # no block on top yet
    _reorg_head(w, snap)
    assert not w.settled_events(alloc.task, 0)  # the payment is gone from the chain
    tick(car)  # notices the reorg, rebroadcasts the same transaction (mined at once)
    assert car.metrics.registry.get_sample_value("pot_settlement_reorgs_total") == 1
    tick(car)
    assert car.intent_log.all()[0].state == "mined"
    w.dev.mine(1)
    tick(car)
    [intent] = car.intent_log.all()
    assert intent.state == "final" and outcome(car, "final") == 1
    assert len(w.settled_events(alloc.task, 0)) == 1
    for p, amount in zip(alloc.payees, alloc.amounts, strict=True):
        assert w.credit(p) == amount


def test_confirmations_count_blocks_on_top_of_the_settle(
    world: World, validator: FakeValidator, tmp_path: Path
) -> None:
    w = world
    publish_round(w, validator)
    car = make_sidecar(w, validator, tmp_path, confirmations=2)
    tick(car)
    tick(car)
    for on_top in (0, 1):
        [intent] = car.intent_log.all()
        assert intent.state == "mined", (on_top, intent)
        w.dev.mine(1)
        tick(car)
    [intent] = car.intent_log.all()
    assert intent.state == "final"  # two blocks on top


def test_zero_confirmations_is_final_once_included(
    world: World, validator: FakeValidator, tmp_path: Path
) -> None:
    w = world
    publish_round(w, validator)
    car = make_sidecar(w, validator, tmp_path, confirmations=0)
    tick(car)
    tick(car)  # the receipt's block is the head: no block on top needed
    [intent] = car.intent_log.all()
    assert intent.state == "final"


def test_bump_is_strictly_above_one_eighth() -> None:
    for fee in (0, 1, 7, 8, 9, 10**9, 3 * 10**9 + 7):
        assert sending.bumped(fee) > fee * 1.125


def test_intent_log_roundtrip(tmp_path: Path) -> None:
    log = intents.IntentLog(tmp_path)
    i = intents.Intent(
        task="ns/a",
        round=2,
        task_id="0x" + "ab" * 32,
        state="sending",
        nonce=4,
        attempts=[intents.Attempt(tx_hash="0x01", raw="0x02", max_fee=3, tip=1, sent_at=1.0)],
    )
    log.save(i)
    assert log.get(i.task_id, 2) == i
    assert [x.key for x in log.all()] == [i.key]
    assert not list(log.directory.glob(".tmp-*"))


def test_a_save_cut_short_is_not_read_as_an_intent(tmp_path: Path) -> None:
    """Killed between writing a save's temp file and renaming it: the intent is the version
    before the save (that is what crash-safe means), never the temp file as a second intent
    (pathlib's ``*.json`` matches dotted names), and the restarted writer clears it."""
    log = intents.IntentLog(tmp_path)
    i = intents.Intent(task="ns/a", round=0, task_id="0x" + "cd" * 32, state="sending", nonce=1)
    log.save(i)
    cut = log.directory / ".tmp-killed.json"
    cut.write_text(json.dumps({**i.to_json(), "state": "final"}))
    assert [x.state for x in log.all()] == ["sending"]
    assert cut.exists()  # a reader leaves it: it may be a live save of the writer's
    log.clear_stale()  # what the sidecar does at start (Sender.resume)
    assert not cut.exists() and [x.state for x in log.all()] == ["sending"]


def test_a_broadcast_that_never_arrived_is_sent_again_at_the_next_poll(
    world: World, validator: FakeValidator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attempt is in the intent log, but its broadcast was lost (the node did not answer,
    or the process died right after the log): the next poll sends the same bytes again instead
    of waiting ``stuck_after`` for a fee bump."""
    w = world
    alloc = publish_round(w, validator)
    car = make_sidecar(w, validator, tmp_path, confirmations=0)  # stuck_after: 30 s
    real = sending.Sender._broadcast
    lost: list[str] = []

    def lose_the_first(self: sending.Sender, attempt: intents.Attempt) -> None:
        if not lost:
            lost.append(attempt.tx_hash)
            return
        real(self, attempt)

    monkeypatch.setattr(sending.Sender, "_broadcast", lose_the_first)
    tick(car)
    assert lost and not w.settled_events(alloc.task, 0)
    tick(car)  # unknown to the node: broadcast again, mined at once
    tick(car)
    [intent] = car.intent_log.all()
    assert intent.state == "final"
    assert [a.tx_hash for a in intent.attempts] == lost  # the same transaction, no fee bump
    assert len(w.settled_events(alloc.task, 0)) == 1


def test_a_receipt_that_lags_its_nonce_is_waited_for(
    world: World, validator: FakeValidator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node shows our nonce as used but has no receipt yet (anvil, under load): the intent
    stays open and is followed to "final", not mistaken for someone else's settle."""
    w = world
    alloc = publish_round(w, validator)
    car = make_sidecar(w, validator, tmp_path, confirmations=0)
    car.tick()  # broadcast
    [intent] = car.intent_log.all()
    w3, me = car.chain.w3, car.key.address
    deadline = time.monotonic() + 10
    while w3.eth.get_transaction_count(me, "latest") <= intent.nonce:  # mined (anvil: soon)
        assert time.monotonic() < deadline, "the settle was never mined"
        time.sleep(0.02)
    real = sending.Sender._canonical_receipt
    hidden: list[str] = []

    def lagging(self: sending.Sender, intent: intents.Intent) -> object:
        if not hidden:
            hidden.append(intent.task)
            return None
        return real(self, intent)

    monkeypatch.setattr(sending.Sender, "_canonical_receipt", lagging)
    car.tick()
    [intent] = car.intent_log.all()
    assert hidden and intent.state == "sending" and intent.orphaned_at > 0
    assert outcome(car, "already") == 0
    car.tick()
    [intent] = car.intent_log.all()
    assert intent.state == "final" and intent.orphaned_at == 0
    assert outcome(car, "final") == 1 and outcome(car, "already") == 0
    assert len(w.settled_events(alloc.task, 0)) == 1


def test_a_nonce_taken_by_another_transaction_fails_the_intent_after_the_grace(
    world: World, validator: FakeValidator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone else used the sidecar's key (one writer per key broken): the nonce is gone and
    none of our attempts is on chain. After ``orphan_grace`` the intent fails, naming why."""
    w = world
    alloc = publish_round(w, validator)
    car = make_sidecar(w, validator, tmp_path)
    monkeypatch.setattr(sending.Sender, "_broadcast", lambda self, attempt: None)
    car.tick()  # persisted, never sent
    [intent] = car.intent_log.all()
    w3 = car.chain.w3
    other = car.key.account.sign_transaction(
        {
            "type": 2,
            "chainId": w.chain_id,
            "nonce": intent.nonce,
            "to": keys.generate().address,
            "value": 1,
            "gas": 21_000,
            "maxFeePerGas": 100 * 10**9,
            "maxPriorityFeePerGas": 10**9,
        }
    )
    w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(other.raw_transaction))
    car.tick()
    [intent] = car.intent_log.all()
    assert intent.state == "sending" and intent.orphaned_at > 0  # not decided yet
    car.sender.orphan_grace = 0.0
    car.tick()
    [intent] = car.intent_log.all()
    assert intent.state == "failed"
    assert intent.error == "nonce consumed by another transaction"
    assert not w.settled_events(alloc.task, 0)


def test_an_escrow_in_another_token_is_never_the_one_that_pays(
    world: World, validator: FakeValidator, tmp_path: Path
) -> None:
    """A griefer funds the task with far more of a token it minted itself: the allocation is
    signed for ETH, so the sidecar settles from the ETH escrow (the junk one would revert
    TokenMismatch, and before the token was signed it would have paid the round in junk)."""
    w = world
    griefer = w.key()
    junk_addr = contracts.deploy(w.rpc, griefer, "TestToken")
    junk = contracts.at(w.rpc, junk_addr, "TestToken")
    w.rpc.transact(griefer, junk.functions.mint(griefer.address, 10**30), abi=junk.abi)
    w.rpc.transact(griefer, junk.functions.approve(w.address, 10**30), abi=junk.abi)
    alloc = publish_round(w, validator)  # funded with 10 ETH by the deployer
    w.rpc.transact(
        griefer,
        w.contract.functions.fundTaskToken(alloc.task_id, junk_addr, 10**30),
        abi=w.contract.abi,
    )
    car = make_sidecar(w, validator, tmp_path, confirmations=0)
    tick(car)
    tick(car)
    [intent] = car.intent_log.all()
    assert intent.state == "final", intent
    for p, amount in zip(alloc.payees, alloc.amounts, strict=True):
        assert w.credit(p) == amount and w.credit(p, junk_addr) == 0


def test_an_attempt_the_node_refuses_is_replaced_by_a_fee_bump(
    world: World, validator: FakeValidator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first attempt's max fee is under the base fee (it rose while the attempt waited,
    or the node that had it in its pool is gone): the node refuses the bytes. The loop goes
    on, and once the attempt is ``stuck_after`` old a fee bump replaces it. The refusal used
    to raise out of every poll before the bump, so the round was never settled and no other
    allocation was looked at."""
    w = world
    alloc = publish_round(w, validator)
    car = make_sidecar(w, validator, tmp_path, confirmations=0, stuck_after=0.2)
    real = car.chain.fees
    calls: list[int] = []

    def too_low_at_first() -> tuple[int, int]:
        calls.append(1)
        return (1, 1) if len(calls) == 1 else real()

    monkeypatch.setattr(car.chain, "fees", too_low_at_first)
    tick(car)  # the open: persisted, refused by the node, not raised
    [intent] = car.intent_log.all()
    assert intent.state == "sending" and intent.attempts[0].max_fee == 1
    assert not w.settled_events(alloc.task, 0)
    time.sleep(0.3)
    tick(car)  # unknown to the node, refused again, stuck: replaced at today's fees
    tick(car)
    [intent] = car.intent_log.all()
    assert intent.state == "final", intent
    assert len(intent.attempts) == 2 and intent.tx_hash == intent.attempts[1].tx_hash
    assert len(w.settled_events(alloc.task, 0)) == 1
    for p, amount in zip(alloc.payees, alloc.amounts, strict=True):
        assert w.credit(p) == amount


def test_a_settle_by_somebody_else_counts_only_once_confirmed(
    world: World, validator: FakeValidator, tmp_path: Path
) -> None:
    """Anyone may submit a quorum-signed allocation. A third party's settle in the head block
    is not "already" for the sidecar until ``confirmations`` blocks sit on top: a reorg
    dropped it here, nobody sent it again, and a sidecar that had counted the round as done
    (as every sidecar did) never settled it."""
    w = world
    alloc = publish_round(w, validator)
    car = make_sidecar(w, validator, tmp_path)  # confirmations: 1
    snap = w.dev.snapshot() if w.dev.kind == "evm" else ""
    w.settle(alloc, w.sign(alloc), sender=w.key(ETH))  # the third party's, in the head block
    tick(car)
    assert all(i.state != "already" for i in car.intent_log.all())
    assert outcome(car, "already") == 0
    _reorg_head(w, snap)
    assert not w.settled_events(alloc.task, 0)
    tick(car)  # not settled any more: the sidecar sends its own
    w.dev.mine(1)
    tick(car)
    [intent] = car.intent_log.all()
    assert intent.state == "final", intent
    assert len(w.settled_events(alloc.task, 0)) == 1
    for p, amount in zip(alloc.payees, alloc.amounts, strict=True):
        assert w.credit(p) == amount


def test_a_confirmed_settle_by_somebody_else_is_already(
    world: World, validator: FakeValidator, tmp_path: Path
) -> None:
    w = world
    alloc = publish_round(w, validator)
    car = make_sidecar(w, validator, tmp_path)  # confirmations: 1
    w.settle(alloc, w.sign(alloc), sender=w.key(ETH))
    w.dev.mine(1)
    tick(car)
    [intent] = car.intent_log.all()
    assert intent.state == "already" and outcome(car, "already") == 1
    assert not intent.attempts


def test_a_chain_error_about_one_allocation_does_not_stall_the_others(
    world: World, validator: FakeValidator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node refuses to estimate one settle with a plain RPC error (not a revert: "gas
    required exceeds allowance" for an allocation too big for a block). The loop logs it and
    settles the allocations after it; it used to end every turn there."""
    w = world
    big = publish_round(w, validator)  # listed first
    small = publish_round(w, validator)
    car = make_sidecar(w, validator, tmp_path, confirmations=0)
    real_open = car.sender.open

    def refuse_big(alloc: allocations.Allocation, *a: Any, **kw: Any) -> intents.Intent:
        if alloc.task == big.task:
            raise errors.ChainError("settle (estimate): gas required exceeds allowance")
        return real_open(alloc, *a, **kw)

    monkeypatch.setattr(car.sender, "open", refuse_big)
    tick(car)
    tick(car)
    states = {i.task: i.state for i in car.intent_log.all()}
    assert states == {small.task: "final"}, states
    assert len(w.settled_events(small.task, 0)) == 1 and not w.settled_events(big.task, 0)
    assert car.metrics.registry.get_sample_value("pot_settlement_rpc_errors_total") == 2


def test_a_validator_account_without_gas_money_is_named_in_the_log(
    world: World, validator: FakeValidator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A ValidatorSet whose accounts hold no ETH leaves its task in Settling: the node refuses
    every settle (anvil at the broadcast, the in-process EVM at the estimate). The sidecar's
    log names the account to fund, not only the node's words."""
    w = world
    alloc = publish_round(w, validator)
    poor = w.key(0)
    car = make_sidecar(w, validator, tmp_path, key=poor, confirmations=0)
    with caplog.at_level("WARNING", logger=sending.__name__):
        car.tick()
    assert not w.settled_events(alloc.task, 0)
    assert f"this validator's account {poor.address} cannot pay its gas; send it ETH" in caplog.text
