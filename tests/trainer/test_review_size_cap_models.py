"""``checkpoints.size_cap`` holds every honest checkpoint of every model the spec allows: a
checkpoint over it is ``OVERSIZED_BLOB``, so an honest one over it would get its miner
slashed. Trained for real (``verification.replay``, the honest trainer's steps) under each
optimizer and weight decay, and for a user model at the cap's edge: many one-element
bfloat16 parameters, buffers and a frozen parameter (no optimizer state)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from pot.trainer import checkpoints, models, tasks, verification

from .conftest import UID, solo_start

BUILTINS: dict[str, dict[str, Any]] = {
    "mlp-regression": {
        "model": {"name": "mlp-regression", "config": {"hidden": 8, "depth": 1, "features": 4}},
        "dataset": {"name": "synthetic-regression", "samples": 64},
    },
    "tiny-gpt": {
        "model": {"name": "tiny-gpt", "config": {"context": 16, "dModel": 16, "layers": 1}},
        "dataset": {"name": "tiny-shakespeare"},
    },
}


def _spec(model: str, optimizer: str, decay: float) -> tasks.TaskSpec:
    raw = {
        **BUILTINS[model],
        "hyperparameters": {
            "lr": 0.01,
            "batchSize": 4,
            "steps": 4,
            "seed": 3,
            "optimizer": optimizer,
            "weightDecay": decay,
        },
        "resources": {"nodes": 1},
        "proof": {"segmentSteps": 2},
    }
    return tasks.from_spec(raw, uid=UID)


@pytest.mark.parametrize("model", sorted(BUILTINS))
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("decay", [0.0, 0.1])
def test_a_trained_builtin_checkpoint_fits_the_cap(
    model: str, optimizer: str, decay: float
) -> None:
    spec = _spec(model, optimizer, decay)
    built = models.build(spec)
    initial = verification._initial(built, spec)
    cap = checkpoints.size_cap(initial)
    _, start, dspec = solo_start(spec, built)
    end, _ = verification.replay(built, spec, dspec, start, steps=3, device=torch.device("cpu"))
    trained = checkpoints.encode(end)
    # The header's numbers at their longest: a run of 10^12 steps.
    far = checkpoints.encode(
        checkpoints.Checkpoint(
            step=10**12, optimizer_steps=10**12, seed=2**62, model=end.model, optim=end.optim
        )
    )
    assert len(trained) < len(far) <= cap - checkpoints.CAP_SLACK // 2, (len(far), cap)


class _Edge(nn.Module):
    """A user model at the cap's edge: 20 000 one-element bfloat16 parameters (Adam keeps
    2 + 2 + 4 bytes each besides the parameter's 2), an int64 buffer and a frozen weight."""

    def __init__(self) -> None:
        super().__init__()
        self.p = nn.ParameterList(
            [nn.Parameter(torch.ones((), dtype=torch.bfloat16)) for _ in range(20_000)]
        )
        self.frozen = nn.Parameter(torch.ones(64), requires_grad=False)
        self.norm = nn.BatchNorm1d(4)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_tiny_low_precision_parameters_fit_the_cap(optimizer: str) -> None:
    spec = _spec("mlp-regression", optimizer, 0.1)
    model = _Edge()
    opt = checkpoints.make_optimizer(spec, model.parameters())
    initial = checkpoints.encode(
        checkpoints.capture(model, opt, step=0, optimizer_steps=0, seed=spec.run_seed)
    )
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.ones_like(p)
    opt.step()
    trained = checkpoints.encode(
        checkpoints.capture(model, opt, step=10**12, optimizer_steps=10**12, seed=2**62)
    )
    assert len(trained) <= checkpoints.size_cap(initial) - checkpoints.CAP_SLACK // 2
