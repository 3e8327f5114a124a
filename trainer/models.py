"""Built-in models and the Protocol user models implement.

A validator must rebuild exactly the computation a miner ran, from the task
spec alone (Proof-of-Learning, Jia et al., S&P 2021, §4: the verifier needs
the model, the data and the update rule). So a model is not just a module:
``build`` returns a ``Built`` bundle of the module, an indexable dataset whose
samples are addressed by integer index (the data spec names indices, never
bytes), the loss and the evaluation function. The trainer and the replaying
validator call the same ``build`` with the same arguments.

Built-ins: ``mlp-regression`` (the MSE regression task of the AIArena paper,
on synthetic data drawn from the run seed) and ``tiny-gpt`` (a character
language model on public-domain Shakespeare passages shipped in
``corpus.txt``). User code: ``model.module = "pkg.mod:build"``, a callable
matching ``Build`` (docs/trainer.md, "Bring your own model"). Before ``build``
is called the global torch RNG is seeded with the run seed (the task's
``hyperparameters.seed`` mixed with its uid, ``tasks.task_seed``), so default
initialisers are reproducible and two task objects never share initial weights.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from pot import errors, store
from pot.trainer import tasks

CORPUS = Path(__file__).with_name("corpus.txt")

Batch = tuple[torch.Tensor, ...]


class Data(Protocol):
    """Samples addressed by index; ``batch`` gathers them (CPU tensors)."""

    def __len__(self) -> int: ...

    def batch(self, indices: torch.Tensor) -> Batch:
        """The samples at ``indices`` (int64, 1-D) as a tuple of tensors."""
        ...


@dataclass(kw_only=True, slots=True)
class Built:
    """What ``build`` returns: everything a step and an evaluation need."""

    model: nn.Module
    """The module to train (on CPU; the trainer moves it)."""
    data: Data
    """Training samples, addressed by index."""
    loss: Callable[[nn.Module, Batch], torch.Tensor]
    """Scalar loss of a batch (already on the model's device)."""
    evaluate: Callable[[nn.Module], dict[str, float]]
    """Held-out metrics, e.g. ``{"evalLoss": 0.1}``; called on the final weights."""


@dataclass(kw_only=True, slots=True, frozen=True)
class DatasetSource:
    """The dataset a builder receives: a built-in name, or a blob's bytes."""

    name: str | None = None
    """Built-in dataset name."""
    blob: bytes | None = field(default=None, repr=False)
    """Bytes of the dataset blob (``dataset.cid``)."""
    samples: int | None = None
    """Requested sample count (synthetic datasets)."""

    def __post_init__(self) -> None:
        if (self.name is None) == (self.blob is None):
            raise ValueError("dataset: exactly one of name and blob")


class Build(Protocol):
    """The signature of a model builder (built-in or ``pkg.mod:build``).

    Called with keyword arguments only, after ``torch.manual_seed(seed)``, by every
    trainer rank and by every replaying validator; so it must be deterministic: the
    same arguments give the same initial weights and the same samples. ``config`` is
    ``spec.model.config``; ``dataset`` is the spec's dataset (a built-in name, or the
    bytes of ``spec.dataset.cid``); ``seed`` is the task's run seed (63 bits, unique
    to the TrainingTask object), not ``hyperparameters.seed``. Errors it raises are
    reported as ``spec.model.module`` errors.
    """

    def __call__(
        self, *, config: Mapping[str, Any], dataset: DatasetSource, seed: int
    ) -> Built: ...


class TensorData:
    """A dataset held as aligned tensors; sample i is ``tuple(t[i] for t)``."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError("TensorData needs aligned, non-empty tensors")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def batch(self, indices: torch.Tensor) -> Batch:
        return tuple(t[indices] for t in self.tensors)


def _cfg_int(config: Mapping[str, Any], key: str, default: int) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise errors.ConfigError(f"spec.model.config.{key}: must be an integer >= 1")
    return value


# --- mlp-regression ------------------------------------------------------------------


def _teacher(features: int, seed: int) -> Callable[[torch.Tensor], torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    w1 = torch.randn(features, 32, generator=gen) / math.sqrt(features)
    w2 = torch.randn(32, 1, generator=gen) / math.sqrt(32)
    return lambda x: torch.tanh(x @ w1) @ w2


def _regression_data(
    n: int, features: int, seed: int, stream: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples of the seed's teacher; ``stream`` 0 trains, 1 evaluates."""
    # Run seeds are 63-bit: keep the derived one inside torch's 64-bit seed range.
    gen = torch.Generator().manual_seed((seed * 2 + 1 + stream) % (1 << 64))
    x = torch.randn(n, features, generator=gen)
    y = _teacher(features, seed)(x) + 0.01 * torch.randn(n, 1, generator=gen)
    return x, y


def _csv_regression(blob: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        rows = [
            [float(v) for v in line.split(",")]
            for line in blob.decode("utf-8").splitlines()
            if line.strip()
        ]
    except (UnicodeDecodeError, ValueError) as exc:
        raise errors.ConfigError(f"spec.dataset.cid: not a CSV of numbers ({exc})") from None
    if not rows or len(rows[0]) < 2 or any(len(r) != len(rows[0]) for r in rows):
        raise errors.ConfigError("spec.dataset.cid: CSV rows must have >= 2 equal columns")
    table = torch.tensor(rows, dtype=torch.float32)
    return table[:, :-1].contiguous(), table[:, -1:].contiguous()


def build_mlp_regression(*, config: Mapping[str, Any], dataset: DatasetSource, seed: int) -> Built:
    """An MLP regressor trained with MSE (AIArena's regression task)."""
    hidden = _cfg_int(config, "hidden", 64)
    depth = _cfg_int(config, "depth", 2)
    if dataset.blob is not None:
        x, y = _csv_regression(dataset.blob)
        features = x.shape[1]
        n_eval = max(1, len(x) // 10)
        eval_x, eval_y, x, y = x[:n_eval], y[:n_eval], x[n_eval:], y[n_eval:]
    else:
        features = _cfg_int(config, "features", 16)
        x, y = _regression_data(dataset.samples or 4096, features, seed, 0)
        eval_x, eval_y = _regression_data(512, features, seed, 1)
    layers: list[nn.Module] = []
    width = features
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, 1))
    model = nn.Sequential(*layers)

    def loss(m: nn.Module, batch: Batch) -> torch.Tensor:
        xb, yb = batch
        return F.mse_loss(m(xb).float(), yb.float())

    def evaluate(m: nn.Module) -> dict[str, float]:
        dev = next(m.parameters()).device
        with torch.no_grad():
            value = F.mse_loss(m(eval_x.to(dev)).float(), eval_y.to(dev).float())
        return {"evalLoss": float(value)}

    return Built(model=model, data=TensorData(x, y), loss=loss, evaluate=evaluate)


# --- tiny-gpt --------------------------------------------------------------------------


class _Block(nn.Module):
    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, c))
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    """A character-level decoder-only transformer (no dropout: replay needs no RNG)."""

    def __init__(self, *, vocab: int, context: int, d_model: int, layers: int, heads: int):
        super().__init__()
        if d_model % heads:
            raise errors.ConfigError("spec.model.config: dModel must be divisible by heads")
        self.context = context
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(context, d_model)
        self.blocks = nn.Sequential(*(_Block(d_model, heads) for _ in range(layers)))
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.tok(idx) + self.pos(pos)
        return self.head(self.ln(self.blocks(x)))


class CharWindows:
    """Windows of ``context + 1`` characters; sample i starts at character i."""

    def __init__(self, text: torch.Tensor, context: int) -> None:
        if len(text) <= context + 1:
            raise errors.ConfigError("spec.dataset: text shorter than the model's context")
        self.text = text
        self.context = context
        self._offsets = torch.arange(context + 1)

    def __len__(self) -> int:
        return len(self.text) - self.context - 1

    def batch(self, indices: torch.Tensor) -> Batch:
        win = self.text[indices[:, None] + self._offsets]
        return win[:, :-1], win[:, 1:]


def build_tiny_gpt(*, config: Mapping[str, Any], dataset: DatasetSource, seed: int) -> Built:
    """A tiny character GPT on the shipped public-domain Shakespeare (or a text blob)."""
    if dataset.blob is not None:
        try:
            raw = dataset.blob.decode("utf-8")
        except UnicodeDecodeError:
            raise errors.ConfigError("spec.dataset.cid: not UTF-8 text") from None
    else:
        raw = CORPUS.read_text(encoding="utf-8")
    vocab = sorted(set(raw))
    lookup = {ch: i for i, ch in enumerate(vocab)}
    text = torch.tensor([lookup[ch] for ch in raw], dtype=torch.long)
    context = _cfg_int(config, "context", 64)
    split = int(len(text) * 0.9)
    train, held = CharWindows(text[:split], context), CharWindows(text[split:], context)
    model = TinyGPT(
        vocab=len(vocab),
        context=context,
        d_model=_cfg_int(config, "dModel", 64),
        layers=_cfg_int(config, "layers", 2),
        heads=_cfg_int(config, "heads", 4),
    )
    eval_idx = torch.arange(0, len(held), max(1, len(held) // 64))[:64]

    def loss(m: nn.Module, batch: Batch) -> torch.Tensor:
        xb, yb = batch
        logits = m(xb)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), yb.reshape(-1))

    def evaluate(m: nn.Module) -> dict[str, float]:
        dev = next(m.parameters()).device
        xb, yb = held.batch(eval_idx)
        with torch.no_grad():
            value = loss(m, (xb.to(dev), yb.to(dev)))
        return {"evalLoss": float(value)}

    return Built(model=model, data=train, loss=loss, evaluate=evaluate)


BUILTINS: dict[str, Build] = {
    "mlp-regression": build_mlp_regression,
    "tiny-gpt": build_tiny_gpt,
}


def resolve(spec: tasks.TaskSpec) -> Build:
    """The builder a spec names: a built-in, or ``pkg.mod:build`` imported."""
    if spec.model_name is not None:
        return BUILTINS[spec.model_name]
    entry = spec.model_module or ""
    module_name, _, attr = entry.partition(":")
    if not module_name or not attr:
        raise errors.ConfigError(f"spec.model.module: {entry!r} is not of the form 'pkg.mod:build'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # user code: any failure to import is the spec's problem
        raise errors.ConfigError(
            f"spec.model.module: cannot import {module_name!r} ({type(exc).__name__}: {exc})"
        ) from exc
    builder = getattr(module, attr, None)
    if builder is None:
        raise errors.ConfigError(f"spec.model.module: module {module_name!r} has no {attr!r}")
    if not callable(builder):
        raise errors.ConfigError(
            f"spec.model.module: {entry!r} is a {type(builder).__name__}, not a callable"
        )
    return builder


def load_dataset(spec: tasks.TaskSpec, blobs: store.ContentStore) -> bytes | None:
    """The bytes of ``spec.dataset.cid`` (None for a built-in dataset).

    Raises the store's own error (``BlobNotFound``, ``BlobCorrupt``, ``StoreError``)
    with a message that names ``spec.dataset.cid``, so a trainer prints one clear
    line and a validator can still tell a missing blob from a corrupt one.
    """
    cid = spec.dataset_cid
    if cid is None:
        return None
    try:
        return blobs.get(cid)
    except errors.BlobNotFound as exc:
        raise errors.BlobNotFound(f"spec.dataset.cid: dataset {cid} not found: {exc}") from exc
    except errors.BlobCorrupt as exc:
        raise errors.BlobCorrupt(f"spec.dataset.cid: dataset {cid} is corrupt: {exc}") from exc
    except errors.StoreError as exc:
        raise errors.StoreError(f"spec.dataset.cid: dataset {cid} unavailable: {exc}") from exc


def build(spec: tasks.TaskSpec, dataset_blob: bytes | None = None) -> Built:
    """Seed the global RNG with the run seed and call the spec's builder with it.

    A user builder's exceptions become ``ConfigError`` naming ``spec.model.module``
    (the trainer prints one line; a validator does not mistake it for the miner's fault).
    """
    source = (
        DatasetSource(blob=dataset_blob)
        if spec.dataset_cid is not None
        else DatasetSource(name=spec.dataset_name, samples=spec.dataset_samples)
    )
    if spec.dataset_cid is not None and dataset_blob is None:
        raise errors.ConfigError("spec.dataset.cid: the dataset blob is required")
    builder = resolve(spec)
    seed = spec.run_seed  # ConfigError naming uid when the spec has none
    torch.manual_seed(seed)
    if spec.model_name is not None:
        built = builder(config=spec.model_config, dataset=source, seed=seed)
    else:
        try:
            built = builder(config=spec.model_config, dataset=source, seed=seed)
        except errors.PotError:
            raise
        except Exception as exc:  # user code
            raise errors.ConfigError(
                f"spec.model.module: {spec.model_module!r} raised {type(exc).__name__}: {exc}"
            ) from exc
    if not isinstance(built, Built):
        raise errors.ConfigError(
            f"spec.model.module: {spec.model_module!r} returned {type(built).__name__}, "
            "not pot.trainer.models.Built"
        )
    return built
