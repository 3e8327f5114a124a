"""``--cheat MODE``: dishonest miners on purpose, so the system can be seen catching them.

Each mode is one of the attacks Proof-of-Learning (Jia et al., S&P 2021, §5)
discusses, in its cheapest form, applied to every segment:

- ``perturb-weights``: commit end weights that training did not produce
  (caught by replay distance: DISTANCE_OVER_THRESHOLD, or NOT_BIT_EXACT);
- ``skip-steps``: save compute by skipping one optimizer step per segment and
  claiming it anyway (the optimizer step count in the end checkpoint gives it
  away: STEP_GAP; had the miner forged that too, the replay distance would);
- ``swap-data``: train on other data than the task's while reporting the
  task's data spec (the first replayed loss differs: WRONG_DATA_SPEC).

Never used unless asked for; the trainer logs a warning when it is.
"""

from __future__ import annotations

import enum

import torch
from torch import nn


class Cheat(enum.Enum):
    """A way to cheat."""

    PERTURB_WEIGHTS = "perturb-weights"
    SKIP_STEPS = "skip-steps"
    SWAP_DATA = "swap-data"


def data_seed_offset(cheat: Cheat | None) -> int:
    """Offset added to the data-order seed (swap-data trains on another order)."""
    return 1 if cheat is Cheat.SWAP_DATA else 0


def skips(cheat: Cheat | None, step: int, seg_start: int, seg_steps: int) -> bool:
    """Whether the cheating gang skips ``step`` (the middle step of each segment)."""
    return cheat is Cheat.SKIP_STEPS and seg_steps > 1 and step == seg_start + seg_steps // 2


def perturb(cheat: Cheat | None, model: nn.Module, step: int, scale: float = 1e-2) -> None:
    """Add seeded noise (same on every rank) to the weights about to be committed."""
    if cheat is not Cheat.PERTURB_WEIGHTS:
        return
    gen = torch.Generator().manual_seed(step)
    with torch.no_grad():
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=gen).to(p.device, p.dtype)
            p.add_(noise * scale * (float(p.detach().float().std()) if p.numel() > 1 else 1.0))
