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
import re
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
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
MAX_DEPTH = 8
"""Deepest header nesting ``decode`` parses (``encode`` writes 4 levels)."""


@dataclass(kw_only=True, slots=True)
class Checkpoint:
    """A decoded training state (CPU tensors)."""

    step: int
    """Steps completed."""
    optimizer_steps: int
    """``optimizer.step()`` calls made; equals ``step`` for an honest run."""
    seed: int
    """The task's run seed: with ``step`` it fixes the RNG state (reseed-per-step scheme)."""
    model: dict[str, torch.Tensor] = field(default_factory=dict)
    """Model state dict."""
    optim: dict[int, dict[str, Any]] = field(default_factory=dict)
    """Optimizer state by parameter index: tensors and scalars."""

    def moments(self) -> dict[str, torch.Tensor]:
        """Float optimizer state other than step counts, by key (``exp_avg``, ...), each
        flattened across parameters into one float64 vector."""
        parts: dict[str, list[torch.Tensor]] = {}
        for idx in sorted(self.optim):
            for key, v in sorted(self.optim[idx].items()):
                if isinstance(v, torch.Tensor) and v.is_floating_point() and key != "step":
                    parts.setdefault(key, []).append(v.reshape(-1).double())
        return {key: torch.cat(vs) for key, vs in parts.items()}

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


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(rb"[^\[\]{}]")
_OPEN = np.frombuffer(b"[{", dtype=np.uint8)


def _depth(text: bytes) -> int:
    """How deeply ``text``'s JSON arrays and objects nest (brackets in strings skipped).

    Checked before ``json.loads``: its C parser recurses once per level and the
    process's recursion limit is raised (py_ecc), so 100 KB of ``[`` crashed the
    interpreter instead of raising. Vectorised: a 16 MiB header costs milliseconds."""
    brackets = np.frombuffer(_NOT_BRACKET.sub(b"", _STRING.sub(b"", text)), dtype=np.uint8)
    if not brackets.size:
        return 0
    steps = np.where(np.isin(brackets, _OPEN), 1, -1)
    return int(np.cumsum(steps).max())


def _dim(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _corrupt(f"bad dimension {value!r}")
    return value


def decode(data: bytes) -> Checkpoint:
    """Parse untrusted checkpoint bytes; ProofError if they are not a checkpoint.

    Every tensor's bytes must follow the previous one's with no gap or overlap
    and the last must end the blob (``encode`` writes exactly that), so decoding
    never copies more than the blob's own size however the header is forged."""
    if len(data) < 12 or data[:8] != MAGIC:
        raise _corrupt("bad magic")
    (hlen,) = struct.unpack("<I", data[8:12])
    if hlen > min(MAX_HEADER, len(data) - 12):
        raise _corrupt("header length out of range")
    head = bytes(data[12 : 12 + hlen])
    if _depth(head) > MAX_DEPTH:
        raise _corrupt(f"header nests deeper than {MAX_DEPTH} levels")
    try:
        header = json.loads(head)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _corrupt(f"header is not JSON ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise _corrupt("unknown format")
    body = memoryview(data)[12 + hlen :]
    tensors: dict[str, torch.Tensor] = {}
    try:
        end = 0
        for entry in header["tensors"]:
            name, dtype = str(entry["name"]), _DTYPES[entry["dtype"]]
            if not name.startswith(("model/", "optim/")):
                raise _corrupt(f"tensor {name}: not model/ or optim/ state")
            shape = [_dim(d) for d in entry["shape"]]
            off, n = _dim(entry["offset"]), _dim(entry["nbytes"])
            itemsize = torch.empty(0, dtype=dtype).element_size()
            if off != end or off + n > len(body) or n != math.prod(shape) * itemsize:
                raise _corrupt(f"tensor {name} out of bounds, overlapping or mis-sized")
            end = off + n
            if name in tensors:
                raise _corrupt(f"tensor {name} twice")
            buf = bytearray(body[off : off + n])
            flat = torch.frombuffer(buf, dtype=dtype) if n else torch.empty(0, dtype=dtype)
            tensors[name] = flat.reshape(shape)
        if end != len(body):
            raise _corrupt(f"{len(body) - end} bytes after the last tensor")
        model = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
        optim: dict[int, dict[str, Any]] = {}
        for idx, entry in header["optimizerState"].items():
            optim[int(idx)] = {
                str(key): _optim_tensor(tensors, v, f"optim/{idx}/{key}")
                if isinstance(v, dict)
                else _scalar(v)
                for key, v in entry.items()
            }
        if set(tensors) - {f"model/{k}" for k in model} - _names(optim):
            raise _corrupt("a tensor that no state refers to")
        step, opt_steps = _dim(header["step"]), _dim(header["optimizerSteps"])
        seed = int(header["rng"]["seed"])
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError, OverflowError) as exc:
        raise _corrupt(f"bad header field ({exc!r})") from None
    return Checkpoint(step=step, optimizer_steps=opt_steps, seed=seed, model=model, optim=optim)


def _optim_tensor(tensors: dict[str, torch.Tensor], ref: dict[str, Any], name: str) -> torch.Tensor:
    """The tensor an optimizer state entry refers to: its own, by its canonical name."""
    if ref != {"tensor": name}:
        raise _corrupt(f"{name} refers to {ref!r:.60}")
    return tensors[name]


def _names(optim: dict[int, dict[str, Any]]) -> set[str]:
    return {
        f"optim/{idx}/{key}"
        for idx, entry in optim.items()
        for key, v in entry.items()
        if isinstance(v, torch.Tensor)
    }


def _scalar(value: Any) -> int | float | bool | None:
    """An optimizer state value that is not a tensor: a JSON scalar, nothing nested."""
    if value is None or isinstance(value, (int, float, bool)):
        return value
    raise _corrupt(f"optimizer state value {value!r:.40} is not a number")


def _fits(ckpt: Checkpoint, model: nn.Module, optimizer: torch.optim.Optimizer) -> str:
    """Why ``ckpt`` cannot be loaded as-is (or ""): names, shapes and dtypes must be the
    model's. ``load_state_dict`` casts dtypes silently and the optimizer takes state
    of any shape, which then failed a later replay step with a RuntimeError (an audit
    error, never the miner's fault)."""
    own = model.state_dict()
    if list(ckpt.model) != list(own):
        return "model state names are not the model's"
    for key, t in ckpt.model.items():
        if t.shape != own[key].shape or t.dtype != own[key].dtype:
            return f"model/{key} is {t.dtype}{list(t.shape)}, not {own[key].dtype}{list(own[key].shape)}"
    groups = [(g, p) for g in optimizer.param_groups for p in g["params"]]
    for idx, entry in ckpt.optim.items():
        if not 0 <= idx < len(groups):
            return "optimizer state for a parameter that does not exist"
        group, p = groups[idx]
        want = _state_template(optimizer, group, p.dtype) if entry else {}
        if sorted(entry) != sorted(want):
            return f"optim/{idx} has state {sorted(entry)}, the optimizer keeps {sorted(want)}"
        for key, v in entry.items():
            like = want[key]
            if not isinstance(like, torch.Tensor):
                if type(v) is not type(like):
                    return f"optim/{idx}/{key} is {type(v).__name__}, not {type(like).__name__}"
                continue
            if not isinstance(v, torch.Tensor):
                return f"optim/{idx}/{key} is {type(v).__name__}, not a tensor"
            if key == "step":
                if v.shape != like.shape or v.dtype != like.dtype:
                    return f"optim/{idx}/step is {v.dtype}{list(v.shape)}, not {like.dtype}[]"
                if not 0 <= float(v) <= ckpt.optimizer_steps:
                    return f"optim/{idx}/step is not a count of at most {ckpt.optimizer_steps}"
            elif v.shape != p.shape or v.dtype != p.dtype:
                return (
                    f"optim/{idx}/{key} is {v.dtype}{list(v.shape)}, not {p.dtype}{list(p.shape)}"
                )
    return ""


_templates: dict[tuple[Any, ...], dict[str, Any]] = {}


def _state_template(
    optimizer: torch.optim.Optimizer, group: dict[str, Any], dtype: torch.dtype
) -> dict[str, Any]:
    """The state ``optimizer`` keeps for a parameter of ``dtype`` once it has stepped:
    the keys, and for each a tensor (its dtype and shape) or a plain value.

    Found by stepping the same optimizer class and group settings on a one-element
    probe. A start checkpoint whose state lacks a key, holds None or a bool step
    where the optimizer keeps a tensor crashed the replay's ``optimizer.step()``
    (KeyError, AttributeError, RuntimeError): an AUDIT_ERROR, never slashed, so a
    miner could forge every segment after the first and be refused by no audit."""
    settings = {k: v for k, v in group.items() if k != "params"}
    key = (type(optimizer), dtype, repr(sorted(settings.items())))
    cached = _templates.get(key)
    if cached is None:
        probe = torch.zeros(1, dtype=dtype, requires_grad=True)
        probe.grad = torch.zeros_like(probe)
        opt: torch.optim.Optimizer = type(optimizer)([probe])  # type: ignore[call-arg]
        opt.param_groups[0].update(settings)
        opt.step()
        cached = dict(opt.state[probe])
        _templates[key] = cached
    return cached


def restore(ckpt: Checkpoint, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load ``ckpt`` into ``model`` and ``optimizer``; ProofError if it does not fit."""
    inner = _unwrap(model)
    device = next(inner.parameters()).device
    wrong = _fits(ckpt, inner, optimizer)
    if wrong:
        raise _corrupt(f"does not fit the model ({wrong})")
    try:
        inner.load_state_dict(ckpt.model, strict=True)
        sd = optimizer.state_dict()
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


def mismatch(mine: Checkpoint, theirs: Checkpoint) -> str:
    """What differs between two checkpoints outside their float state (or "").

    Tolerance mode compares float tensors under a distance; everything else a
    replay reproduces exactly (header, names, shapes, dtypes, integer buffers,
    optimizer step counts and scalars) must be equal, or a miner could move the
    chain through state that is committed but never checked (forged Adam moments
    with a huge step count teleported the weights in one step)."""
    if (mine.step, mine.optimizer_steps, mine.seed) != (
        theirs.step,
        theirs.optimizer_steps,
        theirs.seed,
    ):
        return "header (step, optimizer steps, seed) differs"
    if list(mine.model) != list(theirs.model):
        return "model state names differ"
    pairs = [(f"model/{k}", a, theirs.model[k]) for k, a in mine.model.items()]
    if sorted(mine.optim) != sorted(theirs.optim):
        return "optimizer state covers other parameters"
    for idx in sorted(mine.optim):
        a_entry, b_entry = mine.optim[idx], theirs.optim[idx]
        if sorted(a_entry) != sorted(b_entry):
            return f"optim/{idx}: other state keys"
        for key in sorted(a_entry):
            a, b, name = a_entry[key], b_entry[key], f"optim/{idx}/{key}"
            if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
                pairs.append((name, a, b))
            elif isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor) or a != b:
                return f"{name} is {b!r:.40}, the replay has {a!r:.40}"
    for name, a, b in pairs:
        if a.dtype != b.dtype or a.shape != b.shape:
            return f"{name} is {b.dtype}{list(b.shape)}, the replay has {a.dtype}{list(a.shape)}"
        exact = not a.is_floating_point() or name.endswith("/step")
        if exact and not torch.equal(a, b):
            return f"{name} differs from the replay"
    return ""


def make_optimizer(spec: tasks.TaskSpec, params: Any) -> torch.optim.Optimizer:
    """The optimizer the spec names (trainer and replay build it the same way)."""
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, weight_decay=spec.weight_decay)
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)


CAP_SLACK = 1 << 20
"""Bytes ``size_cap`` adds to its multiples (digits of step counts and offsets)."""


def size_cap(initial: bytes) -> int:
    """The most bytes any checkpoint of the task whose initial checkpoint (step 0, no
    optimizer state yet) encodes to ``initial`` can take: a validator fetches no more.

    A checkpoint that fits the model (``restore``) holds the model's tensors, as the
    initial one does, plus what the spec's optimizer keeps per parameter: Adam and AdamW
    two moments of the parameter's shape and dtype and a 4-byte step, SGD (no momentum)
    nothing. So its body is at most 4 × the initial body (a 1-element float32 parameter:
    4 + 2·4 + 4 bytes), and its header, with three more entries and an ``optimizerState``
    record per parameter, at most 8 × the initial header. Both are fixed by the registered
    spec and uid, so every replica computes the same cap and refuses the same blobs."""
    head = struct.unpack("<I", initial[8:12])[0]
    body = len(initial) - 12 - head
    return 12 + 8 * head + 4 * body + CAP_SLACK
