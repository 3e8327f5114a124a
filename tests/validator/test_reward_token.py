"""The allocation the validators sign names the task's ``reward.token``, so only an escrow
in that token can pay it (the contract's TokenMismatch; tests/settlement for that side)."""

from __future__ import annotations

import pytest
from eth_utils import to_checksum_address

from pot import errors, keys
from pot.settlement import allocations
from pot.validator import specs
from tests.validator.test_app_restore import made
from tests.validator.test_chaining import TASK, Replica, _spec


def _allocate(r: Replica) -> allocations.Allocation:
    miner = keys.generate()
    segs = [made(miner, i, final=i == 2) for i in range(3)]
    for s in segs:
        assert r.submit(s)["ok"]
    for s in (segs[0], segs[2]):
        r.verdicts(s, True)
    r.audited()
    alloc = r.app.allocation(TASK)
    assert alloc is not None
    return alloc


def test_the_allocation_is_signed_in_the_task_token() -> None:
    token = "0x" + "ab" * 20
    alloc = _allocate(Replica(token=token))  # any spelling: kept checksummed
    assert alloc.token == to_checksum_address(token)
    doc = allocations.to_json(alloc, chain_id=1, contract="0x" + "11" * 20, quorum=3)
    assert doc["token"] == alloc.token
    assert allocations.parse(doc)[0] == alloc  # what the sidecar reads back


def test_without_a_token_the_allocation_is_in_eth() -> None:
    assert _allocate(Replica()).token == allocations.NATIVE


@pytest.mark.parametrize("bad", ["0x12", "ETH", 7])
def test_a_bad_token_is_refused_naming_the_field(bad: object) -> None:
    spec = _spec()
    spec["reward"]["token"] = bad
    with pytest.raises(errors.ConfigError, match=r"spec\.reward\.token"):
        specs.check_spec(spec)


@pytest.mark.parametrize("key", ["pool", "minerStake"])
def test_a_reward_past_uint256_is_refused_at_registration(key: str) -> None:
    """The CRD lets 78 digits through (up to 10**78 - 1); anything from 2**256 on could be
    neither signed nor settled, so the replicas refuse the task up front."""
    spec = _spec()
    spec["reward"][key] = str(2**256)
    with pytest.raises(errors.ConfigError, match=rf"spec\.reward\.{key}: .* uint256"):
        specs.check_spec(spec)
    spec["reward"][key] = str(2**256 - 1)
    specs.check_spec(spec)  # the largest that fits
    # Why: the allocation of such a task cannot even be built (so never signed nor served).
    with pytest.raises(errors.ProtocolError, match="uint256"):
        allocations.Allocation(
            task=TASK, round=0, payees=(keys.generate().address,), amounts=(2**256,)
        )
