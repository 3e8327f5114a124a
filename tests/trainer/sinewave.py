"""A user model for pot: a small MLP that learns y = sin(3x).

docs/trainer.md ("Bring your own model") shows this file verbatim, and
tests/trainer/test_user_models.py trains it under torchrun, so the example
cannot rot. Use it with ``spec.model.module: "sinewave:build"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pot.trainer import models


class SineWave:
    """Sample i is (x_i, sin(3 x_i)), with the x drawn once from ``seed``."""

    def __init__(self, n: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.rand(n, 1, generator=gen) * 4 - 2
        self.y = torch.sin(3 * self.x)

    def __len__(self) -> int:
        return len(self.x)

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.x[indices], self.y[indices]


def build(*, config: Mapping[str, Any], dataset: models.DatasetSource, seed: int) -> models.Built:
    """The task's model, data, loss and evaluation; the same for every call."""
    width = int(config.get("width", 32))
    train = SineWave(dataset.samples or 2048, seed)
    held_out = SineWave(256, seed + 1)
    # torch's global RNG was seeded with ``seed``: these initial weights are the task's.
    model = nn.Sequential(nn.Linear(1, width), nn.Tanh(), nn.Linear(width, 1))

    def loss(m: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(m(x).float(), y.float())

    def evaluate(m: nn.Module) -> dict[str, float]:
        device = next(m.parameters()).device
        with torch.no_grad():
            value = loss(m, (held_out.x.to(device), held_out.y.to(device)))
        return {"evalLoss": float(value)}

    return models.Built(model=model, data=train, loss=loss, evaluate=evaluate)
