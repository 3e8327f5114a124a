"""The part of a TrainingTask ``.spec`` that training and replay depend on.

Trainers and validators must agree exactly on what a segment claims to have
computed, so both read the spec through this one pure module (no torch): it
fills the CRD defaults (``crds/trainingtask.yaml``), checks the fields the
trainer needs with errors naming the field, and derives the hyperparameters
hash every segment carries. Proof-of-Learning (Jia et al., S&P 2021, §4)
requires the verifier to know the exact hyperparameters and data order; the
hash binds a segment to them so a miner cannot train under easier settings.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from eth_utils import keccak

from pot import errors

Metric = Literal["l2", "linf", "cosine"]
Optimizer = Literal["sgd", "adam", "adamw"]

BUILTIN_MODELS = ("mlp-regression", "tiny-gpt")
BUILTIN_DATASETS = ("synthetic-regression", "tiny-shakespeare")
DEFAULT_THRESHOLD = 1e-4
# Default audit rate when the task names neither sampleRate nor samplesPerEpoch:
# each of n validators replays this fraction of segments by its own private coin,
# plus each node's always-audited first and final segments: at n = 4 on a
# 1000-segment task that is 4 x (0.003 + 0.002) = 2% of the training compute.
# The stake, not the sampling, deters: with 2f+1 = 3 correct coins a forged
# segment is caught with p_eff ~ 0.009, and cheating loses in expectation for
# every forged fraction once the slash exceeds ~110 segments' compute
# (docs/proof.md, "Audit probability").
DEFAULT_SAMPLE_RATE = 0.003
# Domain of the run-seed derivation (``task_seed``); a new derivation gets a new tag.
SEED_DOMAIN = b"pot-task-seed/v1\x00"
MAX_UID = 128  # what POST /v1/tasks accepts (a Kubernetes uid is a 36-character UUID)


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8; NaN/Infinity refused (not JSON)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def task_seed(seed: int, uid: str) -> int:
    """The run seed of the task object ``uid`` whose hyperparameters name ``seed``.

    Everything a replay derives from "the seed" (initial weights, synthetic data, the data
    order, the per-step reseeding) uses this number, never ``seed`` alone: two TrainingTasks
    with equal specs (both on the default seed 0, or one deleted and re-created under its
    name) would otherwise have identical proof chains, and a miner of one could sign the
    other's content-addressed checkpoints as its own work (docs/protocol.md, "Run seed").
    SHA-256 of a domain tag and the canonical JSON ``[seed, uid]``, first 8 bytes
    big-endian, top bit cleared: a 63-bit integer, so ``torch.manual_seed`` takes it and a
    builder's ``seed + 1`` still does.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise errors.ConfigError("spec.hyperparameters.seed: must be an integer >= 0")
    check_uid(uid)
    digest = hashlib.sha256(SEED_DOMAIN + canonical_json([seed, uid])).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def check_uid(uid: object) -> str:
    """``uid`` if it can name a task object; ConfigError naming ``uid`` otherwise."""
    if not isinstance(uid, str) or not uid or len(uid) > MAX_UID or uid.strip() != uid:
        raise errors.ConfigError(
            f"uid: must be the TrainingTask's metadata.uid (1-{MAX_UID} characters, no "
            f"surrounding whitespace), got {uid!r}"
        )
    return uid


def _get(obj: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    value = obj.get(key, {})
    if not isinstance(value, Mapping):
        raise errors.ConfigError(f"{path}.{key}: must be an object")
    return value


def _num(obj: Mapping[str, Any], key: str, path: str, default: float) -> float:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise errors.ConfigError(f"{path}.{key}: must be a finite number")
    return float(value)


def _int(obj: Mapping[str, Any], key: str, path: str, default: int | None, minimum: int) -> int:
    value = obj.get(key, default)
    if value is None:
        raise errors.ConfigError(f"{path}.{key}: required")
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise errors.ConfigError(f"{path}.{key}: must be an integer >= {minimum}")
    return value


@dataclass(kw_only=True, slots=True, frozen=True)
class TaskSpec:
    """What the trainer and the replaying validator read from ``.spec``."""

    model_name: str | None = None
    """Built-in model (``mlp-regression`` or ``tiny-gpt``), or None with ``model_module``."""
    model_module: str | None = None
    """User code entry point ``pkg.mod:build`` (see ``pot.trainer.models.Build``)."""
    model_config: Mapping[str, Any] = field(default_factory=dict)
    """Model-specific settings passed to the builder."""
    dataset_name: str | None = None
    """Built-in dataset, or None with ``dataset_cid``."""
    dataset_cid: str | None = None
    """CID of a dataset blob in the content store."""
    dataset_url: str | None = None
    """Where a trainer fetches the ``dataset_cid`` blob when its store lacks it (http or
    https). Delivery only: the CID pins the bytes, so the URL is not part of what segments
    commit to, and validators still fetch the blob from the miner."""
    dataset_samples: int | None = None
    """Samples to generate (synthetic datasets)."""
    lr: float = 0.01
    """Learning rate."""
    batch_size: int = 32
    """Samples per optimiser step per rank."""
    steps: int = 1
    """Total optimiser steps."""
    optimizer: Optimizer = "adam"
    """Optimiser name."""
    weight_decay: float = 0.0
    """Weight decay."""
    seed: int = 0
    """``hyperparameters.seed``; what training derives from is ``run_seed`` (with ``uid``)."""
    uid: str | None = None
    """The TrainingTask object's ``metadata.uid`` (not part of ``.spec``): the validators
    take it from the operator's signed registration, the trainer from ``POT_TASK_UID``.
    None only where nothing is built or replayed (``run_seed`` refuses it)."""
    segment_steps: int = 1
    """k: steps per proof segment."""
    sample_rate: float | None = None
    """Fraction of segments validators replay."""
    samples_per_epoch: int | None = None
    """Segments replayed per miner per epoch, instead of a rate."""
    metric: Metric = "l2"
    """Replay distance metric."""
    threshold: float = DEFAULT_THRESHOLD
    """Largest accepted replay distance."""
    deterministic: bool = False
    """Replays must reproduce the end checkpoint bit for bit."""
    nodes: int = 1
    """Nodes in the gang."""
    gpus_per_node: int = 0
    """GPUs per node (0: CPU, gloo)."""

    def __post_init__(self) -> None:
        if (self.model_name is None) == (self.model_module is None):
            raise ValueError("spec.model: set exactly one of name and module")
        if self.model_name is not None and self.model_name not in BUILTIN_MODELS:
            raise ValueError(f"spec.model.name: unknown built-in model {self.model_name!r}")
        if (self.dataset_name is None) == (self.dataset_cid is None):
            raise ValueError("spec.dataset: set exactly one of name and cid")
        if self.dataset_name is not None and self.dataset_name not in BUILTIN_DATASETS:
            raise ValueError(f"spec.dataset.name: unknown built-in dataset {self.dataset_name!r}")
        if self.dataset_url is not None:
            if self.dataset_cid is None:
                raise ValueError(
                    "spec.dataset.url: needs spec.dataset.cid (the CID pins the bytes)"
                )
            if not isinstance(self.dataset_url, str) or not self.dataset_url.startswith(
                ("http://", "https://")
            ):
                raise ValueError("spec.dataset.url: must be an http:// or https:// URL")
        if self.lr <= 0:
            raise ValueError("spec.hyperparameters.lr: must be > 0")
        if self.optimizer not in ("sgd", "adam", "adamw"):
            raise ValueError(f"spec.hyperparameters.optimizer: unknown {self.optimizer!r}")
        if self.segment_steps > self.steps:
            raise ValueError("spec.proof.segmentSteps: must not exceed hyperparameters.steps")
        if self.metric not in ("l2", "linf", "cosine"):
            raise ValueError(f"spec.proof.tolerance.metric: unknown {self.metric!r}")
        if self.threshold <= 0:
            raise ValueError("spec.proof.tolerance.threshold: must be > 0")
        if self.sample_rate is not None and not 0 < self.sample_rate <= 1:
            raise ValueError("spec.proof.sampleRate: must be in (0, 1]")
        if self.uid is not None:
            try:
                check_uid(self.uid)
            except errors.ConfigError as exc:
                raise ValueError(str(exc)) from None

    @property
    def run_seed(self) -> int:
        """The seed everything is derived from: ``task_seed(seed, uid)``; ConfigError
        naming ``uid`` when the spec was read without one."""
        if self.uid is None:
            raise errors.ConfigError(
                "uid: required to build or replay the task (the TrainingTask's "
                "metadata.uid; the run seed is derived from it)"
            )
        return task_seed(self.seed, self.uid)

    @property
    def segments(self) -> int:
        """Segments per node: ceil(steps / k); the last may be shorter."""
        return -(-self.steps // self.segment_steps)

    @property
    def dataset_ref(self) -> str:
        """The dataset's name or CID, as recorded in data specs."""
        return self.dataset_name or self.dataset_cid or ""

    @property
    def audit_rate(self) -> float:
        """The per-segment audit probability the validators use (rate form)."""
        if self.sample_rate is not None:
            return self.sample_rate
        if self.samples_per_epoch is not None:
            return min(1.0, self.samples_per_epoch / self.segments)
        return DEFAULT_SAMPLE_RATE

    def hyperparameters(self) -> dict[str, Any]:
        """Everything that changes the computation of a step, with defaults filled."""
        return {
            "model": {
                "name": self.model_name,
                "module": self.model_module,
                "config": dict(self.model_config),
            },
            "dataset": {
                "name": self.dataset_name,
                "cid": self.dataset_cid,
                "samples": self.dataset_samples,
            },
            "lr": self.lr,
            "batchSize": self.batch_size,
            "steps": self.steps,
            "optimizer": self.optimizer,
            "weightDecay": self.weight_decay,
            "seed": self.seed,
            "segmentSteps": self.segment_steps,
            "deterministic": self.deterministic,
        }

    def hyperparams_hash(self) -> str:
        """``0x`` keccak256 of the canonical JSON of ``hyperparameters()``."""
        return "0x" + bytes(keccak(canonical_json(self.hyperparameters()))).hex()


def from_spec(spec: Mapping[str, Any], *, uid: str | None = None) -> TaskSpec:
    """Read a TrainingTask ``.spec`` (as JSON) of the task object ``uid``; ConfigError
    naming the bad field. Without ``uid`` the spec can be checked but not built."""
    if not isinstance(spec, Mapping):
        raise errors.ConfigError("spec: must be an object")
    model = _get(spec, "model", "spec")
    dataset = _get(spec, "dataset", "spec")
    hyper = _get(spec, "hyperparameters", "spec")
    proof = _get(spec, "proof", "spec")
    tol = _get(proof, "tolerance", "spec.proof")
    res = _get(spec, "resources", "spec")
    config = model.get("config", {})
    if not isinstance(config, Mapping):
        raise errors.ConfigError("spec.model.config: must be an object")
    rate = proof.get("sampleRate")
    per_epoch = proof.get("samplesPerEpoch")
    samples = dataset.get("samples")
    try:
        return TaskSpec(
            model_name=model.get("name"),
            model_module=model.get("module"),
            model_config=dict(config),
            dataset_name=dataset.get("name"),
            dataset_cid=dataset.get("cid"),
            dataset_url=dataset.get("url"),
            dataset_samples=None
            if samples is None
            else _int(dataset, "samples", "spec.dataset", None, 1),
            lr=_num(hyper, "lr", "spec.hyperparameters", 0.01),
            batch_size=_int(hyper, "batchSize", "spec.hyperparameters", 32, 1),
            steps=_int(hyper, "steps", "spec.hyperparameters", None, 1),
            optimizer=hyper.get("optimizer", "adam"),
            weight_decay=_num(hyper, "weightDecay", "spec.hyperparameters", 0.0),
            seed=_int(hyper, "seed", "spec.hyperparameters", 0, 0),
            segment_steps=_int(proof, "segmentSteps", "spec.proof", None, 1),
            sample_rate=None if rate is None else _num(proof, "sampleRate", "spec.proof", 0),
            samples_per_epoch=None
            if per_epoch is None
            else _int(proof, "samplesPerEpoch", "spec.proof", None, 1),
            metric=tol.get("metric", "l2"),
            threshold=_num(tol, "threshold", "spec.proof.tolerance", DEFAULT_THRESHOLD),
            deterministic=bool(proof.get("deterministic", False)),
            nodes=_int(res, "nodes", "spec.resources", 1, 1),
            gpus_per_node=_int(res, "gpusPerNode", "spec.resources", 0, 0),
            uid=uid,
        )
    except ValueError as exc:
        raise errors.ConfigError(str(exc)) from None
