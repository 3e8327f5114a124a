"""Seeded, replayable data order: which samples each rank uses at each step.

Proof-of-Learning (Jia et al., S&P 2021, §4.1) needs the verifier to feed a
replayed step exactly the batch the prover used. Recording indices per step
would bloat segments, so the order is a pure function of a few integers, the
``DataSpec``: all ranks read one endless stream of sample positions, epoch e
of which is a permutation of the dataset drawn from ``(seed, e)``; at step t,
rank r takes the ``batchSize`` positions starting at ``(t * worldSize + r) *
batchSize``. That is DistributedSampler's split of a global batch, made
step-addressable so any segment can be replayed without the ones before it.

Per-step randomness inside the model (dropout, if a user model has it) comes
from reseeding the global RNG with ``step_seed(seed, step, rank)`` before each
micro-batch, so the checkpoint's RNG state is a function of the step and
replays need no stored generator state.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from pot.trainer import segments

SAMPLER = "stream-v1"


def _mix(*parts: int) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def step_seed(seed: int, step: int, rank: int) -> int:
    """The RNG seed of rank ``rank``'s micro-batch at ``step``."""
    return _mix(seed, step, rank, 0x5EED)


@dataclass(kw_only=True, slots=True, frozen=True)
class DataSpec:
    """Everything that fixes every rank's samples at every step."""

    seed: int
    """The task's run seed (``tasks.TaskSpec.run_seed``: ``hyperparameters.seed`` mixed with
    the task uid), so twin tasks read their samples in different orders."""
    dataset: str
    """Dataset name or CID."""
    size: int
    """Samples in the dataset."""
    batch_size: int
    """Samples per rank per step."""
    world_size: int
    """Ranks whose batches make one step."""
    _perms: OrderedDict[int, torch.Tensor] = field(
        default_factory=OrderedDict, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.size < 1 or self.batch_size < 1 or self.world_size < 1 or self.seed < 0:
            raise ValueError("data spec: size, batchSize and worldSize must be >= 1, seed >= 0")

    def record(self) -> dict[str, Any]:
        """The ``dataSpec`` object of a segment."""
        return {
            "sampler": SAMPLER,
            "seed": self.seed,
            "dataset": self.dataset,
            "datasetSize": self.size,
            "batchSize": self.batch_size,
            "worldSize": self.world_size,
        }

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> DataSpec:
        """Parse a segment's ``dataSpec``; Rejected(WRONG_DATA_SPEC) if unusable."""
        keys = {"sampler", "seed", "dataset", "datasetSize", "batchSize", "worldSize"}
        bad = segments.Rejected(segments.Rejection.WRONG_DATA_SPEC, f"not a {SAMPLER} data spec")
        if set(rec) != keys or rec.get("sampler") != SAMPLER:
            raise bad
        ints = [rec[k] for k in ("seed", "datasetSize", "batchSize", "worldSize")]
        if any(isinstance(v, bool) or not isinstance(v, int) for v in ints):
            raise bad
        if not isinstance(rec["dataset"], str):
            raise bad
        try:
            return cls(
                seed=rec["seed"],
                dataset=rec["dataset"],
                size=rec["datasetSize"],
                batch_size=rec["batchSize"],
                world_size=rec["worldSize"],
            )
        except ValueError:
            raise bad from None

    def _perm(self, epoch: int) -> torch.Tensor:
        perm = self._perms.get(epoch)
        if perm is None:
            gen = torch.Generator().manual_seed(_mix(self.seed, epoch))
            perm = torch.randperm(self.size, generator=gen)
            self._perms[epoch] = perm
            while len(self._perms) > 2:
                self._perms.popitem(last=False)
        return perm

    def indices(self, step: int, rank: int) -> torch.Tensor:
        """The sample indices (int64) rank ``rank`` uses at ``step``."""
        start = (step * self.world_size + rank) * self.batch_size
        positions = torch.arange(start, start + self.batch_size)
        first, last = start // self.size, (start + self.batch_size - 1) // self.size
        if first == last:
            return self._perm(first)[positions - first * self.size]
        out = torch.empty(self.batch_size, dtype=torch.long)
        for epoch in range(first, last + 1):
            mask = (positions // self.size) == epoch
            out[mask] = self._perm(epoch)[positions[mask] - epoch * self.size]
        return out
