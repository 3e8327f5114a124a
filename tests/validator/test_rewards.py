"""Reward math properties (hypothesis): exact sums, monotonicity, slashing, determinism."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pot.validator import rewards

ADDRS = [f"0x{i:040x}" for i in range(1, 9)]
VALIDATORS = {f"0x{0xAA00 + i:040x}": 1 for i in range(4)}

wei = st.integers(min_value=0, max_value=10**30)
work = st.builds(
    rewards.MinerWork,
    stake=st.integers(min_value=1, max_value=10**24),
    samples=st.integers(min_value=0, max_value=10**9),
    rejected=st.booleans(),
)
miners_st = st.dictionaries(st.sampled_from(ADDRS), work, min_size=1, max_size=6)


def _amount(a: rewards.Allocation, who: str) -> int:
    return dict(zip(a.payees, a.amounts, strict=True)).get(who, 0)


@settings(max_examples=300, deadline=None)
@given(pool=wei, fee=st.integers(0, 5000), miners=miners_st)
def test_sum_equals_pool_and_slashing(
    pool: int, fee: int, miners: dict[str, rewards.MinerWork]
) -> None:
    a = rewards.allocate(pool=pool, fee_bps=fee, miners=miners, validators=VALIDATORS)
    verified = sum(w.samples for w in miners.values() if not w.rejected)
    if pool > 0 and verified > 0:
        assert sum(a.amounts) == pool and a.target_met
    else:
        assert a.amounts == () and not a.target_met
    for addr, w in miners.items():
        if w.rejected:
            assert _amount(a, addr) == 0  # zero for a rejected miner
            assert addr in a.slashed
    assert list(a.payees) == sorted(a.payees, key=str.lower)
    assert a.slash_amounts == tuple(miners[x].stake for x in a.slashed)


@settings(max_examples=200, deadline=None)
@given(
    pool=wei,
    miners=miners_st,
    who=st.sampled_from(ADDRS),
    extra=st.integers(1, 10**6),
    stake_extra=st.integers(1, 10**20),
)
def test_monotone_in_stake_and_work(
    pool: int, miners: dict[str, rewards.MinerWork], who: str, extra: int, stake_extra: int
) -> None:
    base = miners.get(who, rewards.MinerWork(stake=1, samples=0))
    if base.rejected:
        base = rewards.MinerWork(stake=base.stake, samples=base.samples)
    miners = {**miners, who: base}
    before = _amount(
        rewards.allocate(pool=pool, fee_bps=500, miners=miners, validators=VALIDATORS), who
    )
    more_work = {**miners, who: rewards.MinerWork(stake=base.stake, samples=base.samples + extra)}
    more_stake = {
        **miners,
        who: rewards.MinerWork(stake=base.stake + stake_extra, samples=base.samples),
    }
    for bigger in (more_work, more_stake):
        after = _amount(
            rewards.allocate(pool=pool, fee_bps=500, miners=bigger, validators=VALIDATORS), who
        )
        assert after >= before


def test_identical_on_every_replica_and_input_order() -> None:
    miners = {a: rewards.MinerWork(stake=10**18, samples=7 * i + 1) for i, a in enumerate(ADDRS)}
    reversed_miners = dict(reversed(list(miners.items())))
    a = rewards.allocate(pool=10**18 + 7, fee_bps=333, miners=miners, validators=VALIDATORS)
    b = rewards.allocate(
        pool=10**18 + 7,
        fee_bps=333,
        miners=reversed_miners,
        validators=dict(reversed(list(VALIDATORS.items()))),
    )
    assert a == b and sum(a.amounts) == 10**18 + 7


def test_fee_split_by_stake_and_target_gate() -> None:
    miners = {ADDRS[0]: rewards.MinerWork(stake=1, samples=1)}
    a = rewards.allocate(
        pool=10_000,
        fee_bps=1000,
        miners=miners,
        validators={"0x" + "b" * 40: 3, "0x" + "c" * 40: 1},
    )
    assert dict(zip(a.payees, a.amounts, strict=True)) == {
        ADDRS[0]: 9000,
        "0x" + "b" * 40: 750,
        "0x" + "c" * 40: 250,
    }
    gated = rewards.allocate(
        pool=10_000, fee_bps=1000, miners=miners, validators={}, target_met=False
    )
    assert gated.amounts == () and not gated.target_met


def test_split_exact_with_remainders() -> None:
    assert rewards.split(10, {"0xa": 1, "0xb": 1, "0xc": 1}) == {"0xa": 4, "0xb": 3, "0xc": 3}
    assert sum(rewards.split(10**30 + 1, {"0xa": 3, "0xb": 7}).values()) == 10**30 + 1


def test_spellings_of_one_address_come_out_the_same_in_any_order() -> None:
    """A validator that also mines, spelt differently in each role: the payee's spelling does
    not depend on which mapping was built first (a restored replica's order differs)."""
    upper = "0x" + "AB" * 20
    lower = upper.lower()
    miners = {
        upper: rewards.MinerWork(stake=1, samples=3),
        ADDRS[0]: rewards.MinerWork(stake=1, samples=5),
    }
    results = {
        rewards.allocate(
            pool=10**6,
            fee_bps=500,
            miners=dict(m_items),
            validators=dict(v_items),
        )
        for m_items in (list(miners.items()), list(reversed(miners.items())))
        for v_items in ([(lower, 1), *VALIDATORS.items()], [*VALIDATORS.items(), (lower, 1)])
    }
    assert len(results) == 1
    (alloc,) = results
    assert [p.lower() for p in alloc.payees].count(lower) == 1


def test_chained_and_target() -> None:
    assert rewards.chained([("a", 0), ("a", 1), ("a", 3), ("b", 1)]) == {("a", 0), ("a", 1)}
    minimize = {"name": "evalLoss", "threshold": 0.5, "direction": "minimize"}
    assert rewards.meets(0.5, minimize) and not rewards.meets(0.6, minimize)
    assert not rewards.meets(None, minimize) and not rewards.meets("0.1", minimize)
    assert rewards.meets(2, {**minimize, "direction": "maximize"})
