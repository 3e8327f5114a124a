"""A user model with BatchNorm (running statistics and a batch counter: buffers).

DDP broadcasts rank 0's buffers before every forward, so the committed state
and its replay must both follow rank 0's buffers (tests/trainer/test_user_models.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from pot.trainer import models


def build(*, config: Mapping[str, Any], dataset: models.DatasetSource, seed: int) -> models.Built:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(dataset.samples or 256, 4, generator=gen)
    y = x.sum(dim=1, keepdim=True)
    # No bias before the BatchNorm: its gradient is zero up to rounding, which Adam
    # scales up to lr-sized steps, so replays on another thread count would drift.
    model = nn.Sequential(
        nn.Linear(4, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1)
    )

    def loss(m: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return F.mse_loss(m(batch[0]), batch[1])

    def evaluate(m: nn.Module) -> dict[str, float]:
        device = next(m.parameters()).device
        with torch.no_grad():
            return {"evalLoss": float(loss(m, (x[:64].to(device), y[:64].to(device))))}

    return models.Built(model=model, data=models.TensorData(x, y), loss=loss, evaluate=evaluate)
