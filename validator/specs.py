"""Task specs as the replicas see them: everything the replicated application derives from
a ``TrainingTask`` spec at registration, with one ``ConfigError`` naming the bad field.

Also the checks a segment passes at the door against its task (``misplaced``: the shape the
spec allows; ``chain_break``: the miner's neighbouring segments already in the state).

Pure and deterministic (no clock, no I/O): every replica must derive the same numbers, and
the API runs the same check before ordering, so a bad spec is refused at the door.
"""

from __future__ import annotations

from typing import Any

from eth_utils import is_address, to_checksum_address

from pot import errors
from pot.settlement import allocations
from pot.trainer import segments, tasks
from pot.validator.verdicts import SCALE


def parse_reward(spec: dict[str, Any]) -> dict[str, Any]:
    """The reward fields validators need; ConfigError naming the field."""
    reward = spec.get("reward")
    if not isinstance(reward, dict):
        raise errors.ConfigError("spec.reward: required")
    out: dict[str, Any] = {}
    for key, default in (("pool", None), ("minerStake", "1000000000000000000")):
        value = reward.get(key, default)
        if not allocations.is_wei(value) or len(value) > 78:
            raise errors.ConfigError(
                f"spec.reward.{key}: {value!r:.80} is not a decimal wei string"
            )
        # 78 digits (the CRD's pattern) reach 10**78 - 1, past uint256: an allocation with
        # such an amount cannot be signed (EIP-712 uint256) nor settled, and the replicas'
        # signing pass failed on it before it reached the tasks after it (all unsettled).
        if int(value) >= 2**256:
            raise errors.ConfigError(f"spec.reward.{key}: {value} does not fit a uint256")
        out[key] = int(value)
    fee = reward.get("validatorFeeBps", 500)
    if type(fee) is not int or not 0 <= fee <= 5000:
        raise errors.ConfigError("spec.reward.validatorFeeBps: must be an integer in 0..5000")
    out["feeBps"] = fee
    token = reward.get("token") or allocations.NATIVE
    if not isinstance(token, str) or not is_address(token):
        raise errors.ConfigError("spec.reward.token: must be a 0x address (or absent: ETH)")
    out["token"] = to_checksum_address(token)
    target = reward.get("targetMetric")
    if target is not None:
        if not isinstance(target, dict) or not isinstance(target.get("name"), str):
            raise errors.ConfigError("spec.reward.targetMetric.name: required")
        thr = target.get("threshold")
        if type(thr) not in (int, float):
            raise errors.ConfigError("spec.reward.targetMetric.threshold: must be a number")
        direction = target.get("direction", "minimize")
        if direction not in ("minimize", "maximize"):
            raise errors.ConfigError("spec.reward.targetMetric.direction: minimize or maximize")
        out["target"] = {"name": target["name"], "threshold": thr, "direction": direction}
    return out


def check_spec(spec: Any) -> dict[str, Any]:
    """Everything the replicas derive from a spec; ConfigError names the bad field."""
    if not isinstance(spec, dict):
        raise errors.ConfigError("spec: must be an object")
    try:
        ts = tasks.from_spec(spec)
    except ValueError as exc:
        raise errors.ConfigError(str(exc)) from None
    info = parse_reward(spec)
    info.update(
        nodes=ts.nodes,
        steps=ts.steps,
        batchSize=ts.batch_size,
        segmentSteps=ts.segment_steps,
        # Integer parts per 2^64: the sampling draw compares integers only.
        rate=int(ts.audit_rate * SCALE),
    )
    return info


def misplaced(info: dict[str, Any], seg: segments.Segment) -> str | None:
    """Why ``seg`` cannot be segment ``index`` of the task (``segments.misplaced``, the check
    the replay makes too), or None. Tasks registered before ``segmentSteps`` was kept in
    ``info``: unchecked."""
    k = info.get("segmentSteps")
    wrong = None if k is None else segments.misplaced(seg, info["steps"], k)
    return None if wrong is None else wrong[1]


def chain_break(t: dict[str, Any], miner: str, seg: segments.Segment) -> str | None:
    """Why ``seg`` does not chain with the miner's neighbouring segments already in the
    state (``None`` if it does, or if they are not in yet)."""
    before = t["segments"].get(f"{miner}/{seg.index - 1}") if seg.index > 0 else None
    if before is not None and before.get("endCid", seg.start_cid) != seg.start_cid:
        return (
            f"startCid {seg.start_cid} is not segment {seg.index - 1}'s endCid {before['endCid']}"
        )
    after = t["segments"].get(f"{miner}/{seg.index + 1}")
    if after is not None and after.get("startCid", seg.end_cid) != seg.end_cid:
        return f"endCid {seg.end_cid} is not segment {seg.index + 1}'s startCid {after['startCid']}"
    initial = t.get("initialCid")
    if seg.index == 0 and initial is not None and seg.start_cid != initial:
        return f"startCid {seg.start_cid} is not the task's initial checkpoint {initial}"
    return None
