"""The few collectives the trainer needs besides DDP's own, on the default process group.

JSON and raw bytes between ranks (never pickle: a peer's bytes are only ever parsed as JSON
or hashed), joining the group, and leaving it without pulling rank 0's store from under the
others.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import time
from typing import Any

import torch
import torch.distributed as dist

from pot import errors

log = logging.getLogger("pot.trainer")


def init_distributed(rank: int, world_size: int, device: torch.device) -> None:
    """Join the process group (NCCL on GPUs, gloo on CPU); TrainingError on failure."""
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    os.environ.setdefault("RANK", str(rank))
    os.environ.setdefault("WORLD_SIZE", str(world_size))
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=10))
    except (RuntimeError, ValueError, OSError) as exc:
        raise errors.TrainingError(f"torch.distributed ({backend}) failed to start: {exc}") from exc


def _to_tensor(raw: bytes, device: torch.device) -> torch.Tensor:
    if not raw:
        return torch.zeros(0, dtype=torch.uint8, device=device)
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).to(device)


def _to_bytes(t: torch.Tensor) -> bytes:
    # numpy, not bytes(storage): that iterates in Python, a byte at a time.
    return t.cpu().contiguous().numpy().tobytes() if t.numel() else b""


def all_gather_json(value: Any, device: torch.device) -> list[Any]:
    """Every rank's JSON-able ``value`` (without pickle: peers' bytes are only ever JSON)."""
    raw = json.dumps(value).encode()
    world = dist.get_world_size()
    size = torch.tensor([len(raw)], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = max(int(x.item()) for x in sizes)
    buf = torch.zeros(longest, dtype=torch.uint8, device=device)
    buf[: len(raw)] = _to_tensor(raw, device)
    parts = [torch.empty_like(buf) for _ in range(world)]
    dist.all_gather(parts, buf)
    return [json.loads(_to_bytes(p[: int(n.item())])) for p, n in zip(parts, sizes, strict=True)]


def broadcast_bytes(raw: bytes, src: int, device: torch.device) -> bytes:
    """``raw`` from rank ``src`` on every rank."""
    size = torch.tensor([len(raw)], dtype=torch.int64, device=device)
    dist.broadcast(size, src=src)
    buf = (
        _to_tensor(raw, device)
        if dist.get_rank() == src
        else torch.empty(int(size.item()), dtype=torch.uint8, device=device)
    )
    dist.broadcast(buf, src=src)
    return _to_bytes(buf)


def leave_process_group(rank: int, world_size: int, timeout: float = 30.0) -> None:
    """Destroy the process group without pulling the store from under the others.

    Rank 0 hosts the c10d TCPStore. If it exits while another rank is still
    inside ``destroy_process_group``, that rank's gloo threads lose the store
    and the process aborts ("terminate called without an active exception"),
    failing a run that has finished. So every other rank reports on the store
    once its group is gone, and rank 0 keeps the store up until all have
    reported, or until ``timeout`` passes.
    """
    from torch.distributed import distributed_c10d

    store = distributed_c10d._get_default_store()  # held: rank 0's outlives the group
    dist.destroy_process_group()
    key = "pot/left"
    try:
        if rank != 0:
            store.add(key, 1)
            return
        deadline = time.monotonic() + timeout
        while store.add(key, 0) < world_size - 1 and time.monotonic() < deadline:
            time.sleep(0.01)
    except RuntimeError as exc:  # a peer already gone: nothing left to protect
        log.debug("leaving the process group: %s", exc)
