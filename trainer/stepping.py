"""One training step, written once for the trainer and for the replaying validator.

Replay is only as faithful as its agreement with training (Proof-of-Learning,
Jia et al., S&P 2021, §4.2 discusses the reproducibility noise that forces a
tolerance). So the pieces both sides run live here: the micro-batch of one
rank (reseed, gather indices, forward, loss), how rank gradients combine into
the step's gradient (DDP's mean: each rank's gradient divided by the world
size, summed in rank order), and the precision and determinism settings.

Deterministic mode fixes the last source of disagreement on CPU: the
all-reduce's summation order. The trainer then registers ``ordered_mean_hook``
on DDP, which all-gathers the gradient buckets and sums them in rank order,
exactly as ``combine`` does in a single replaying process, so the replayed end
checkpoint is bit-identical at any world size. Tolerance mode keeps DDP's
default all-reduce (fastest) and is judged by distance instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from pot.trainer import data, models


def use_autocast(device: torch.device, deterministic: bool) -> bool:
    """bf16 autocast on GPUs unless the task asks for determinism."""
    return device.type == "cuda" and not deterministic


def micro_loss(
    built: models.Built,
    model: nn.Module,
    spec: data.DataSpec,
    *,
    step: int,
    rank: int,
    device: torch.device,
    autocast: bool,
    data_seed_offset: int = 0,
) -> torch.Tensor:
    """The loss of rank ``rank``'s micro-batch at ``step`` (graph attached)."""
    torch.manual_seed(data.step_seed(spec.seed, step, rank))
    source = spec
    if data_seed_offset:  # only the swap-data cheat uses another order
        source = data.DataSpec(
            seed=spec.seed + data_seed_offset,
            dataset=spec.dataset,
            size=spec.size,
            batch_size=spec.batch_size,
            world_size=spec.world_size,
        )
    batch = built.data.batch(source.indices(step, rank))
    batch = tuple(t.to(device, non_blocking=True) for t in batch)
    if autocast:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            return built.loss(model, batch)
    return built.loss(model, batch)


def combine(per_rank: Sequence[Sequence[torch.Tensor]], world_size: int) -> list[torch.Tensor]:
    """DDP's mean gradient: sum over ranks, in rank order, of grad / world size."""
    out = [g / world_size for g in per_rank[0]]
    for grads in per_rank[1:]:
        for acc, g in zip(out, grads, strict=True):
            acc.add_(g / world_size)
    return out


def ordered_mean_hook(group: Any, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP comm hook: all-gather the bucket, then ``combine`` in rank order."""
    buf = bucket.buffer()
    world = dist.get_world_size(group)
    parts = [torch.empty_like(buf) for _ in range(world)]
    fut = dist.all_gather(parts, buf, group=group, async_op=True).get_future()

    def reduce(_: torch.futures.Future[Any]) -> torch.Tensor:
        (mean,) = combine([[p] for p in parts], world)
        buf.copy_(mean)
        return buf

    return fut.then(reduce)


# DDP inspects the hook's annotations as objects; this module's are strings
# (``from __future__ import annotations``), so give DDP the real ones.
ordered_mean_hook.__annotations__.update(
    bucket=dist.GradBucket, group=Any, **{"return": torch.futures.Future[torch.Tensor]}
)


def broadcast_buffers(model: nn.Module) -> None:
    """All ranks: every buffer (BatchNorm statistics, counters) set to rank 0's.

    DDP (``broadcast_buffers=True``) does this before every forward, so rank 0's
    buffers are the gang's; but after the last step of a segment each rank still
    holds its own micro-batch's update, and a node whose local rank 0 is not rank 0
    committed those. Called before a segment is captured, so every node commits
    the state the next step starts from (the replay's, see ``ReplayBuffers``)."""
    for buf in model.buffers():
        dist.broadcast(buf, 0)


class ReplayBuffers:
    """DDP's buffer semantics in a replay that runs every rank in one module: each
    rank's forward starts from the step's buffers, and rank 0's update is kept."""

    def __init__(self, model: nn.Module) -> None:
        self.buffers = list(model.buffers())
        self.start: list[torch.Tensor] = []
        self.kept: list[torch.Tensor] = []

    def before(self, rank: int) -> None:
        """Call before rank ``rank``'s forward."""
        if not self.buffers:
            return
        with torch.no_grad():
            if rank == 0:
                self.start = [b.detach().clone() for b in self.buffers]
                return
            if rank == 1:
                self.kept = [b.detach().clone() for b in self.buffers]
            for b, s in zip(self.buffers, self.start, strict=True):
                b.copy_(s)

    def after_step(self) -> None:
        """Call after the last rank's forward of a step: rank 0's buffers stay."""
        if not self.kept:
            return
        with torch.no_grad():
            for b, k in zip(self.buffers, self.kept, strict=True):
                b.copy_(k)
        self.kept = []


@contextlib.contextmanager
def deterministic(enabled: bool) -> Iterator[None]:
    """Deterministic kernels and one intra-op thread (CPU GEMM results depend on
    the thread count), restored afterwards."""
    if not enabled:
        yield
        return
    threads = torch.get_num_threads()
    was = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was)
        torch.set_num_threads(threads)


def mean_loss(per_rank: Sequence[float]) -> float:
    """The recorded loss of a step: float64 mean over ranks, in rank order."""
    total = 0.0
    for value in per_rank:
        total += float(value)
    return total / len(per_rank)
