"""Reward allocation: integer wei, deterministic rounding, sums to the pool exactly.

DESIGN §4 step 4 and issue 6: P_i = verified samples of miner i ÷ all verified
samples, S_i = the miner's stake, R_i = pool × S_i·P_i ÷ Σ S_j·P_j; the
validators' fee (validatorFeeBps of the pool) is split by their stakes; a miner
with a rejected segment is slashed (its stake) and gets nothing.

Every replica computes this from the same committed state and signs the result,
and the contract checks 2f+1 signatures over the exact payee/amount lists, so
the computation must be bit-for-bit deterministic: Python integers only (no
floats anywhere), shares by the largest-remainder method (Hamilton), ties
broken by address, payees sorted by address. Since P_i's denominator is common
to all miners, S_i·P_i ∝ S_i·samples_i and we weight by that product.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

BPS = 10_000


@dataclass(frozen=True, slots=True, kw_only=True)
class MinerWork:
    """What the replicated state knows about one miner at task end."""

    stake: int
    """S_i in wei."""
    samples: int
    """Training samples in the miner's accepted segments (verified, or not sampled for audit)."""
    rejected: bool = False
    """A segment of this miner was rejected by 2f+1 auditors: slashed, paid nothing."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Allocation:
    """Payees sorted by address; amounts in wei; ``sum(amounts) == pool`` whenever anything is paid."""

    payees: tuple[str, ...]
    amounts: tuple[int, ...]
    slashed: tuple[str, ...]
    slash_amounts: tuple[int, ...]
    target_met: bool


def split(total: int, weights: Mapping[str, int]) -> dict[str, int]:
    """``total`` split in proportion to ``weights``: floors, then the remainder by largest
    fractional part (ties to the lower address). Sums to ``total`` exactly when any weight > 0."""
    if total < 0 or any(w < 0 for w in weights.values()):
        raise ValueError("split of a negative amount or weight")
    denom = sum(weights.values())
    if denom == 0 or total == 0:
        return {k: 0 for k in weights}
    shares = {k: total * w // denom for k, w in weights.items()}
    left = total - sum(shares.values())
    # Remainders are total*w mod denom; compare as integers, never as floats.
    order = sorted(weights, key=lambda k: (-(total * weights[k] % denom), k.lower(), k))
    for k in order[:left]:
        shares[k] += 1
    return shares


def allocate(
    *,
    pool: int,
    fee_bps: int,
    miners: Mapping[str, MinerWork],
    validators: Mapping[str, int],
    target_met: bool = True,
) -> Allocation:
    """The allocation for one (task, round).

    ``validators`` maps each validator's address to its stake (equal stakes when the
    ValidatorSet sets none). When the target metric is missed, or no miner has verified
    work, nothing is paid (``target_met`` False: the contract refunds the funder) but
    slashing still applies.
    """
    if pool < 0 or not 0 <= fee_bps <= BPS:
        raise ValueError("pool must be >= 0 and fee_bps in 0..10000")
    # Every order below is total and independent of the mappings' insertion order: replicas
    # that rebuilt their state from a snapshot iterate it in another order (app.restore).
    slashed = sorted((a for a, w in miners.items() if w.rejected), key=lambda a: (a.lower(), a))
    weights = {a: w.stake * w.samples for a, w in miners.items() if not w.rejected}
    paid = target_met and sum(weights.values()) > 0 and pool > 0
    amounts: dict[str, int] = {}
    if paid:
        fee = pool * fee_bps // BPS
        if not validators or sum(validators.values()) == 0:
            vstakes = dict.fromkeys(validators, 1)
        else:
            vstakes = dict(validators)
        if not vstakes:
            fee = 0
        miner_part = split(pool - fee, weights)
        fee_part = split(fee, vstakes)
        for part in (miner_part, fee_part):
            for a, x in part.items():
                key = a.lower()
                amounts[key] = amounts.get(key, 0) + x
        # One spelling per paid address; if a miner and a validator spell one differently,
        # the smallest spelling (a checksummed one sorts before all-lower-case), not the last.
        canon: dict[str, str] = {}
        for a in sorted({*weights, *vstakes}):
            canon.setdefault(a.lower(), a)
        pairs = sorted((a, x) for a, x in amounts.items() if x > 0)
        payees = tuple(canon[a] for a, _ in pairs)
        values = tuple(x for _, x in pairs)
    else:
        payees, values = (), ()
    return Allocation(
        payees=payees,
        amounts=values,
        slashed=tuple(slashed),
        slash_amounts=tuple(miners[a].stake for a in slashed),
        target_met=paid,
    )


def chained(have: Iterable[tuple[str, int]]) -> set[tuple[str, int]]:
    """Of the (miner, index) pairs in ``have``, those each miner chained from index 0
    without a gap. Only these earn: a miner that withholds segment i cannot have i+1 start
    from weights of its choosing (the chain check needs both ends) and be paid for it."""
    pairs = set(have)
    out: set[tuple[str, int]] = set()
    for who in {miner for miner, _ in pairs}:
        i = 0
        while (who, i) in pairs:
            out.add((who, i))
            i += 1
    return out


def meets(value: Any, target: Mapping[str, Any]) -> bool:
    """Whether a final metric ``value`` meets the task's target metric (``specs``): a
    missing or non-numeric value does not."""
    if not isinstance(value, int | float):
        return False
    if target["direction"] == "minimize":
        return bool(value <= target["threshold"])
    return bool(value >= target["threshold"])
