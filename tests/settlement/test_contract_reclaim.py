"""A task's escrow is never locked for good: after RECLAIM_AFTER without funding or settlement
its funder takes back what is left (a failed or deleted task, or an overfunded one), and only
the funder; a settlement after that pays nobody from the emptied escrow. Naming an escrow in
`settle` (the funder is not signed) wins nothing: slashed stake is burned."""

from __future__ import annotations

from pot import keys
from pot.settlement import allocations

from .conftest import ETH, World
from .test_contract import _reverts


def _later(w: World, seconds: int) -> None:
    w.dev.call("evm_increaseTime", hex(seconds))
    w.dev.mine(1)


def test_funder_reclaims_leftover_escrow_only_after_the_delay(world: World) -> None:
    w = world
    c = w.contract
    delay = c.functions.RECLAIM_AFTER().call()
    assert delay == 90 * 24 * 3600
    task = w.task()
    funder = w.key(10 * ETH)
    w.fund_task(task, 5 * ETH, funder)
    payee = w.key()
    alloc = allocations.Allocation(task=task, round=0, payees=(payee.address,), amounts=(3 * ETH,))
    tid = alloc.task_id

    def reclaim(who: keys.Key) -> None:
        w.rpc.transact(who, c.functions.reclaim(tid), abi=c.abi, what="reclaim")

    # Too early; and never by anyone but the funder.
    err = _reverts("ReclaimLocked", lambda: reclaim(funder))
    assert err.error_args[0] >= w.rpc.w3.eth.get_block("latest")["timestamp"] + delay - 5
    _reverts("TaskNotFunded", lambda: reclaim(w.key()))  # escrows are per funder
    _reverts(
        "TaskNotFunded",
        lambda: w.rpc.transact(funder, c.functions.reclaim(b"\x01" * 32), abi=c.abi),
    )
    # A settlement restarts the clock: 60 days after funding, settle; 60 more days is not enough.
    _later(w, 60 * 24 * 3600)
    w.settle(alloc, w.sign(alloc), funder=funder.address)
    _later(w, 60 * 24 * 3600)
    _reverts("ReclaimLocked", lambda: reclaim(funder))
    _later(w, 31 * 24 * 3600)
    reclaim(funder)
    assert c.functions.escrowOf(tid, funder.address).call()[1] == 0
    assert w.credit(funder.address) == 2 * ETH  # the overfunded 2 ETH, as a pull credit
    assert w.credit(payee.address) == 3 * ETH  # what was settled stays the payee's
    _reverts("NothingToWithdraw", lambda: reclaim(funder))
    # A late allocation for the task (another round) finds no escrow and pays nobody.
    late = allocations.Allocation(task=task, round=1, payees=(payee.address,), amounts=(ETH,))
    _reverts("InsufficientEscrow", lambda: w.estimate_settle(late, w.sign(late), funder.address))
    before = w.rpc.w3.eth.get_balance(funder.address)
    r = w.rpc.transact(funder, c.functions.withdraw(), abi=c.abi)
    fee = r["gasUsed"] * r["effectiveGasPrice"]
    assert w.rpc.w3.eth.get_balance(funder.address) == before + 2 * ETH - fee


def test_unsettled_task_escrow_comes_back_whole(world: World) -> None:
    """The task failed (no allocation ever): the whole escrow returns, topped-up part included."""
    w = world
    c = w.contract
    task = w.task()
    funder = w.key(10 * ETH)
    w.fund_task(task, 2 * ETH, funder)
    _later(w, 89 * 24 * 3600)
    w.fund_task(task, ETH, funder)  # a top-up restarts the clock
    _later(w, 2 * 24 * 3600)
    tid = allocations.Allocation(task=task, round=0, payees=(), amounts=()).task_id
    _reverts("ReclaimLocked", lambda: w.rpc.transact(funder, c.functions.reclaim(tid), abi=c.abi))
    _later(w, 88 * 24 * 3600)
    w.rpc.transact(funder, c.functions.reclaim(tid), abi=c.abi)
    assert w.credit(funder.address) == 3 * ETH


def test_a_missed_target_frees_every_escrow_of_the_task_at_once(world: World) -> None:
    """The validators sign a missed target as ``targetMet: false`` with no payees
    (``validator.rewards.allocate``): the settlement refunds sum(amounts) = 0, and the escrow
    sat locked for 90 days more (the settle restarted the clock) although the task was over
    and docs/protocol.md says the funder is refunded. Now every funder reclaims at once."""
    w = world
    c = w.contract
    task = w.task()
    funder, other = w.key(20 * ETH), w.key(10 * ETH)
    w.fund_task(task, 5 * ETH, funder)
    w.fund_task(task, 2 * ETH, other)
    alloc = allocations.Allocation(task=task, round=0, payees=(), amounts=(), target_met=False)
    tid = alloc.task_id
    assert not c.functions.targetMissed(tid).call()
    w.settle(alloc, w.sign(alloc), funder=funder.address)
    assert c.functions.targetMissed(tid).call()
    for who, wei in ((funder, 5 * ETH), (other, 2 * ETH)):
        w.rpc.transact(who, c.functions.reclaim(tid), abi=c.abi, what="reclaim")
        assert c.functions.escrowOf(tid, who.address).call()[1] == 0
        assert w.credit(who.address) == wei
    # A task whose target was met keeps the 90-day lock on what is left.
    met = w.task()
    w.fund_task(met, 5 * ETH, funder)
    paid = allocations.Allocation(task=met, round=0, payees=(w.key().address,), amounts=(ETH,))
    w.settle(paid, w.sign(paid), funder=funder.address)
    assert not c.functions.targetMissed(paid.task_id).call()
    _reverts(
        "ReclaimLocked",
        lambda: w.rpc.transact(funder, c.functions.reclaim(paid.task_id), abi=c.abi),
    )


def test_a_front_runner_naming_its_own_escrow_takes_no_slashed_stake(world: World) -> None:
    """``settle``'s ``funder`` is not signed, and slashed stake used to be credited to the
    funder named. With a missed target (no payees, so any escrow covers the allocation) a
    stranger could fund the task with 1 wei, submit the published allocation first naming
    itself, and collect the cheater's whole stake. Slashed stake is burned now."""
    w = world
    c = w.contract
    cheater = w.key(5 * ETH)
    w.rpc.transact(cheater, c.functions.stake(), abi=c.abi, value=2 * ETH)
    task = w.task()
    funder, thief = w.key(20 * ETH), w.key(ETH)
    w.fund_task(task, 5 * ETH, funder)
    w.fund_task(task, 1, thief)
    alloc = allocations.Allocation(
        task=task,
        round=0,
        payees=(),
        amounts=(),
        slashed=(cheater.address,),
        slash_amounts=(2 * ETH,),
        target_met=False,
    )
    held = w.rpc.w3.eth.get_balance(w.address)
    w.settle(alloc, w.sign(alloc), sender=thief, funder=thief.address)
    assert c.functions.stakes(cheater.address).call()[0] == 0
    assert w.credit(thief.address) == 0 and w.credit(funder.address) == 0
    assert c.functions.burned().call() == 2 * ETH
    # The burned ETH stays in the contract, which still holds every escrow and credit.
    assert w.rpc.w3.eth.get_balance(w.address) == held
    # The thief gets back only its own 1 wei (the target was missed), the funder its 5 ETH.
    for who, wei in ((thief, 1), (funder, 5 * ETH)):
        w.rpc.transact(who, c.functions.reclaim(alloc.task_id), abi=c.abi, what="reclaim")
        assert w.credit(who.address) == wei
