"""Stand-in for the torchrun trainer in operator tests: resumable, stdlib only.

Counts steps, committing a checkpoint (the step number) to
``/var/lib/pot/checkpoint`` — the trainer state volume, which outlives gang
restarts — and resumes from it, as the real trainer resumes from its last
committed checkpoint. Every start is appended to ``/var/lib/pot/starts`` as
``attempt:resumed_step`` so a test can read what each attempt resumed from.
Behaviour comes from the task spec it is given (``/etc/pot/task/spec.json``):
``hyperparameters.steps`` steps of ``model.config.standinSeconds`` each, or
exit 1 at once when ``model.config.standinFail`` (a crashing member).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

STATE = Path("/var/lib/pot")

if __name__ == "__main__":
    # PID 1 of a container ignores SIGTERM unless it handles it (as in real pods).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    spec = json.loads(Path("/etc/pot/task/spec.json").read_text())
    config = spec["model"].get("config") or {}
    steps, per_step = (
        int(spec["hyperparameters"]["steps"]),
        float(config.get("standinSeconds", 0.05)),
    )
    if config.get("standinFail"):
        sys.exit(1)
    ckpt = STATE / "checkpoint"
    step = int(ckpt.read_text()) if ckpt.exists() else 0
    with open(STATE / "starts", "a") as fh:
        fh.write(f"{os.environ.get('POT_ATTEMPT')}:{step}\n")
    while step < steps:
        time.sleep(per_step)
        step += 1
        tmp = STATE / "checkpoint.tmp"
        tmp.write_text(str(step))
        tmp.replace(ckpt)
    sys.exit(0)
