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


def perturb(
    cheat: Cheat | None, state: dict[str, torch.Tensor], step: int, scale: float = 1e-2
) -> None:
    """Add seeded noise to the floating-point tensors of a captured model state, in place.

    Only the commitment is forged; the live model trains on. Perturbing the live model
    of one node of a DDP gang also changed the gradients the honest nodes averaged, so
    their later segments failed replay too and an honest miner was slashed with the
    cheater (tests/integration/test_train_to_allocation.py).
    """
    if cheat is not Cheat.PERTURB_WEIGHTS:
        return
    gen = torch.Generator().manual_seed(step)
    with torch.no_grad():
        for t in state.values():
            if not t.is_floating_point():
                continue
            noise = torch.randn(t.shape, generator=gen).to(t.dtype)
            t.add_(noise * scale * (float(t.detach().float().std()) if t.numel() > 1 else 1.0))
