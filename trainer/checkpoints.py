"""Training state to bytes and back, deterministically, for content addressing.

A segment commits to its start and end state by CID (Proof-of-Learning, Jia
et al., S&P 2021: the prover logs weights every k steps). For the CID to be a
commitment and for deterministic mode to compare a replay bit for bit, equal
states must encode to equal bytes on every rank and every node. ``torch.save``
makes no such promise (zip metadata, pickle details), so the format is our own:

    b"POTCKPT1" | u32 header length | canonical JSON header | raw tensor bytes

The header lists each tensor (name, dtype, shape, offset, length) in a fixed
order: model state first, then optimizer state by parameter index and key.
It also holds the step, the number of optimizer steps actually taken (a
skipped step shows up here), and the RNG scheme: randomness is reseeded from
(seed, step, rank) every micro-batch (``pot.trainer.data.step_seed``), so the
RNG state at a step boundary is fully described by the seed.

Decoding treats the bytes as untrusted (validators read miners' blobs):
bounds, dtypes and shapes are checked and errors are ``ProofError``.
Restoring never takes hyperparameters from a checkpoint: the optimizer keeps
the param groups of the task spec, only its state tensors are loaded.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pot import errors
from pot.trainer import tasks

MAGIC = b"POTCKPT1"
FORMAT = "pot-ckpt-v1"
_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
_NAMES = {v: k for k, v in _DTYPES.items()}
MAX_HEADER = 16 << 20


@dataclass(kw_only=True, slots=True)
class Checkpoint:
    """A decoded training state (CPU tensors)."""

    step: int
    """Steps completed."""
    optimizer_steps: int
    """``optimizer.step()`` calls made; equals ``step`` for an honest run."""
    seed: int
    """Task seed: with ``step`` it fixes the RNG state (reseed-per-step scheme)."""
    model: dict[str, torch.Tensor] = field(default_factory=dict)
    """Model state dict."""
    optim: dict[int, dict[str, Any]] = field(default_factory=dict)
    """Optimizer state by parameter index: tensors and scalars."""

    def weights(self) -> torch.Tensor:
        """All floating-point model tensors flattened into one float64 vector."""
        parts = [t.reshape(-1).double() for t in self.model.values() if t.is_floating_point()]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def _unwrap(model: nn.Module) -> nn.Module:
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, nn.Module) else model


def capture(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    step: int,
    optimizer_steps: int,
    seed: int,
) -> Checkpoint:
    """A CPU snapshot of the model and optimizer (safe to encode on another thread)."""
    state = {k: v.detach().to("cpu", copy=True) for k, v in _unwrap(model).state_dict().items()}
    optim: dict[int, dict[str, Any]] = {}
    for idx, entry in optimizer.state_dict()["state"].items():
        optim[int(idx)] = {
            key: value.detach().to("cpu", copy=True) if isinstance(value, torch.Tensor) else value
            for key, value in entry.items()
        }
    return Checkpoint(
        step=step, optimizer_steps=optimizer_steps, seed=seed, model=state, optim=optim
    )


def _raw(t: torch.Tensor) -> bytes:
    """The tensor's bytes in memory order (little-endian on every platform we run on).

    Through numpy, as raw bytes (a uint8 view, so bfloat16 works too): ``bytes()``
    of a torch storage iterates it one Python int at a time, which cost 2.4 s of CPU
    per 1.4 MB checkpoint and made proof generation cost more than the training
    (bench/trainer.py)."""
    flat = t.detach().contiguous().reshape(-1)
    if not flat.numel():
        return b""
    return flat.view(torch.uint8).numpy().tobytes()


def encode(ckpt: Checkpoint) -> bytes:
    """Deterministic bytes of ``ckpt``."""
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    offset = 0

    def add(name: str, t: torch.Tensor) -> dict[str, str]:
        nonlocal offset
        if t.dtype not in _NAMES:
            raise errors.TrainingError(f"checkpoint: unsupported dtype {t.dtype} in {name}")
        raw = _raw(t)
        entries.append(
            {
                "name": name,
                "dtype": _NAMES[t.dtype],
                "shape": list(t.shape),
                "offset": offset,
                "nbytes": len(raw),
            }
        )
        blobs.append(raw)
        offset += len(raw)
        return {"tensor": name}

    for key, t in ckpt.model.items():
        add(f"model/{key}", t)
    optim: dict[str, dict[str, Any]] = {}
    for idx in sorted(ckpt.optim):
        optim[str(idx)] = {
            key: add(f"optim/{idx}/{key}", v) if isinstance(v, torch.Tensor) else v
            for key, v in sorted(ckpt.optim[idx].items())
        }
    header = {
        "format": FORMAT,
        "step": ckpt.step,
        "optimizerSteps": ckpt.optimizer_steps,
        "rng": {"scheme": "reseed-per-step", "seed": ckpt.seed},
        "byteorder": "little",
        "tensors": entries,
        "optimizerState": optim,
    }
    head = tasks.canonical_json(header)
    return MAGIC + struct.pack("<I", len(head)) + head + b"".join(blobs)


def _corrupt(message: str) -> errors.ProofError:
    return errors.ProofError(f"checkpoint does not decode: {message}")


def decode(data: bytes) -> Checkpoint:
    """Parse untrusted checkpoint bytes; ProofError if they are not a checkpoint."""
    if len(data) < 12 or data[:8] != MAGIC:
        raise _corrupt("bad magic")
    (hlen,) = struct.unpack("<I", data[8:12])
    if hlen > min(MAX_HEADER, len(data) - 12):
        raise _corrupt("header length out of range")
    try:
        header = json.loads(data[12 : 12 + hlen])
    except (ValueError, UnicodeDecodeError) as exc:
        raise _corrupt(f"header is not JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise _corrupt("unknown format")
    body = memoryview(data)[12 + hlen :]
    tensors: dict[str, torch.Tensor] = {}
    try:
        for entry in header["tensors"]:
            name, dtype = str(entry["name"]), _DTYPES[entry["dtype"]]
            shape = [int(d) for d in entry["shape"]]
            off, n = int(entry["offset"]), int(entry["nbytes"])
            itemsize = torch.empty(0, dtype=dtype).element_size()
            if off < 0 or n < 0 or off + n > len(body) or n != math.prod(shape) * itemsize:
                raise _corrupt(f"tensor {name} out of bounds or mis-sized")
            if name in tensors:
                raise _corrupt(f"tensor {name} twice")
            buf = bytearray(body[off : off + n])
            flat = torch.frombuffer(buf, dtype=dtype) if n else torch.empty(0, dtype=dtype)
            tensors[name] = flat.reshape(shape)
        model = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
        optim: dict[int, dict[str, Any]] = {}
        for idx, entry in header["optimizerState"].items():
            optim[int(idx)] = {
                key: tensors[v["tensor"]] if isinstance(v, dict) else v for key, v in entry.items()
            }
        step, opt_steps = int(header["step"]), int(header["optimizerSteps"])
        seed = int(header["rng"]["seed"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _corrupt(f"bad header field ({exc!r})") from None
    return Checkpoint(step=step, optimizer_steps=opt_steps, seed=seed, model=model, optim=optim)


def restore(ckpt: Checkpoint, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load ``ckpt`` into ``model`` and ``optimizer``; ProofError if it does not fit."""
    inner = _unwrap(model)
    device = next(inner.parameters()).device
    try:
        inner.load_state_dict(ckpt.model, strict=True)
        sd = optimizer.state_dict()
        n_params = sum(len(g["params"]) for g in sd["param_groups"])
        if any(not 0 <= idx < n_params for idx in ckpt.optim):
            raise _corrupt("optimizer state for a parameter that does not exist")
        sd["state"] = {
            idx: {
                k: v.to(device) if isinstance(v, torch.Tensor) and k != "step" else v
                for k, v in entry.items()
            }
            for idx, entry in ckpt.optim.items()
        }
        optimizer.load_state_dict(sd)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise _corrupt(f"does not fit the model ({exc})") from None


def make_optimizer(spec: tasks.TaskSpec, params: Any) -> torch.optim.Optimizer:
    """The optimizer the spec names (trainer and replay build it the same way)."""
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, weight_decay=spec.weight_decay)
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
