"""Proof segments: the signed record a miner publishes every k steps.

Proof-of-Learning (Jia et al., S&P 2021) makes training verifiable by
committing to checkpoints every k steps and to the data each step used, so a
verifier can re-execute any segment it picks after the fact. A segment here is
that commitment for steps ``[startStep, startStep + steps)``: start and end
checkpoint CIDs, the data spec that reproduces every rank's samples, the
hyperparameters hash and the per-step losses, signed by the node's miner key
as EIP-712 typed data (docs/protocol.md, "Proof segment") so validators and
the settlement contract can recover who claims the work.

This module is pure (no torch, no aiohttp): validators import it to parse
untrusted JSON, recover signers and name rejections. Parsing never raises
anything but ``Rejected`` (a ``ProofError`` carrying a ``Rejection``), and
every way a segment can be refused has a name in ``Rejection`` (STYLE:
"every wire rejection has a name").
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eth_utils import keccak

from pot import cids, errors, jsonguard, keys, signing
from pot.trainer import tasks

DOMAIN = signing.offchain_domain("segment")
TYPES: signing.Types = {
    "Segment": [
        {"name": "task", "type": "string"},
        {"name": "index", "type": "uint256"},
        {"name": "startStep", "type": "uint256"},
        {"name": "steps", "type": "uint256"},
        {"name": "startCid", "type": "string"},
        {"name": "endCid", "type": "string"},
        {"name": "bodyHash", "type": "bytes32"},
    ]
}
PRIMARY = "Segment"
MAX_BYTES = 1 << 20  # a segment is a few KB; refuse anything absurd before parsing
MAX_STEPS = 100_000

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_HASH = re.compile(r"^0x[0-9a-f]{64}$")
_SIGNATURE = re.compile(r"^0x[0-9a-fA-F]{130}$")
_FIELDS = {
    "task",
    "index",
    "nodeRank",
    "miner",
    "startStep",
    "steps",
    "startCid",
    "endCid",
    "dataSpec",
    "hyperparamsHash",
    "losses",
    "world",
    "final",
    "metrics",
    "storeUrl",
    "signature",
}


class Rejection(enum.Enum):
    """Why a segment is refused. On the wire a reason is the member's name."""

    MALFORMED = "not JSON, a missing or mistyped field, or an unknown field"
    WRONG_TASK = "the segment names a task other than the one being verified"
    BAD_SIGNATURE = "the signature does not recover to the segment's (or expected) miner"
    REPLAYED_INDEX = "index does not match startStep / k: an old segment under a new index"
    STEP_GAP = "steps do not follow on: wrong length, a wrong index, or a skipped step"
    BROKEN_CHAIN = "startCid is not the previous segment's endCid (or, for index 0, the seed's)"
    WRONG_DATA_SPEC = "the data spec, or the data the losses came from, is not the task's"
    HYPERPARAMS_MISMATCH = "hyperparamsHash differs from the task's hyperparameters"
    WRONG_WORLD = "the world layout does not match the task's gang"
    NON_FINITE = "a loss, a weight or a replayed weight is NaN or infinite"
    MISSING_BLOB = "a checkpoint (or the task's dataset) the segment needs cannot be fetched"
    CORRUPT_BLOB = "a checkpoint or dataset blob does not hash to its CID, or does not decode"
    OVERSIZED_BLOB = "a checkpoint is larger than any checkpoint of the task's model can be"
    LOSS_MISMATCH = "the replayed per-step losses differ from the recorded ones"
    DISTANCE_OVER_THRESHOLD = "the replayed end weights are farther than the task's threshold"
    NOT_BIT_EXACT = "deterministic mode: the replayed end checkpoint differs bit for bit"
    WRONG_METRICS = "a final segment's metrics are not what its end checkpoint evaluates to"


class Rejected(errors.ProofError):
    """A segment was refused for ``reason``; the message says what exactly."""

    def __init__(self, reason: Rejection, message: str) -> None:
        super().__init__(f"{reason.name}: {message}")
        self.reason = reason
        self.detail = message


@dataclass(kw_only=True, slots=True, frozen=True)
class World:
    """The torch.distributed layout the segment was trained under."""

    nnodes: int
    """Nodes (trainer pods)."""
    nproc_per_node: int
    """Workers (ranks) per node."""

    def __post_init__(self) -> None:
        if self.nnodes < 1 or self.nproc_per_node < 1:
            raise ValueError("world: nnodes and nprocPerNode must be >= 1")

    @property
    def world_size(self) -> int:
        """Total ranks."""
        return self.nnodes * self.nproc_per_node

    def record(self) -> dict[str, int]:
        """The wire form."""
        return {
            "nnodes": self.nnodes,
            "nprocPerNode": self.nproc_per_node,
            "worldSize": self.world_size,
        }


@dataclass(kw_only=True, slots=True, frozen=True)
class Segment:
    """One proof segment (docs/protocol.md). ``signature`` is empty until signed."""

    task: str
    """Task id ``namespace/name``."""
    index: int
    """Per (task, miner) counter from 0; always ``startStep // k``."""
    node_rank: int
    """The publishing node."""
    miner: str
    """Address of the node's miner key (checksummed)."""
    start_step: int
    """First step of the segment."""
    steps: int
    """Steps in the segment (k, or fewer for the final one)."""
    start_cid: str
    """Checkpoint before ``start_step``."""
    end_cid: str
    """Checkpoint after the last step."""
    data_spec: Mapping[str, Any]
    """Reproduces every rank's sample indices (see ``pot.trainer.data``)."""
    hyperparams_hash: str
    """``TaskSpec.hyperparams_hash()``."""
    losses: tuple[float, ...]
    """Mean training loss over ranks, per step (NaN/Inf travel as null)."""
    world: World
    """The gang's layout."""
    final: bool = False
    """The node's last segment."""
    metrics: Mapping[str, float] = field(default_factory=dict)
    """Final evaluation metrics (final segment)."""
    store_url: str = ""
    """Where the node serves the checkpoint blobs."""
    signature: str = ""
    """EIP-712 signature (0x, 65 bytes)."""

    def record(self, *, with_signature: bool = True) -> dict[str, Any]:
        """The JSON object (camelCase) of docs/protocol.md."""
        rec: dict[str, Any] = {
            "task": self.task,
            "index": self.index,
            "nodeRank": self.node_rank,
            "miner": self.miner,
            "startStep": self.start_step,
            "steps": self.steps,
            "startCid": self.start_cid,
            "endCid": self.end_cid,
            "dataSpec": dict(self.data_spec),
            "hyperparamsHash": self.hyperparams_hash,
            "losses": [x if math.isfinite(x) else None for x in self.losses],
            "world": self.world.record(),
            "final": self.final,
            "metrics": {k: v if math.isfinite(v) else None for k, v in self.metrics.items()},
            "storeUrl": self.store_url,
        }
        if with_signature:
            rec["signature"] = self.signature
        return rec

    @property
    def end_step(self) -> int:
        """The step after the segment's last one."""
        return self.start_step + self.steps


def to_json(segment: Segment) -> bytes:
    """Canonical JSON of the signed record."""
    return tasks.canonical_json(segment.record())


def body_hash(segment: Segment) -> bytes:
    """keccak256 of the canonical JSON of the record without ``signature``."""
    return bytes(keccak(tasks.canonical_json(segment.record(with_signature=False))))


def _message(segment: Segment) -> dict[str, Any]:
    return {
        "task": segment.task,
        "index": segment.index,
        "startStep": segment.start_step,
        "steps": segment.steps,
        "startCid": segment.start_cid,
        "endCid": segment.end_cid,
        "bodyHash": body_hash(segment),
    }


def digest(segment: Segment) -> str:
    """``0x`` EIP-712 digest: the segment's identity for idempotent submission."""
    return "0x" + signing.digest(DOMAIN, TYPES, PRIMARY, _message(segment)).hex()


def sign(segment: Segment, key: keys.Key) -> Segment:
    """The segment with ``miner`` set to the key's address and signed by it."""
    unsigned = dataclasses.replace(segment, miner=key.address, signature="")
    sig = signing.sign(key, DOMAIN, TYPES, PRIMARY, _message(unsigned))
    return dataclasses.replace(unsigned, signature=sig)


def recover(segment: Segment) -> str:
    """The checksummed address that signed ``segment``; Rejected(BAD_SIGNATURE) if none."""
    try:
        return signing.recover(segment.signature, DOMAIN, TYPES, PRIMARY, _message(segment))
    except errors.ProtocolError as exc:
        raise Rejected(Rejection.BAD_SIGNATURE, str(exc)) from exc


def check_signature(segment: Segment, expected_miner: str | None = None) -> None:
    """Rejected(BAD_SIGNATURE) unless the signer is ``miner`` (and ``expected_miner``)."""
    signer = recover(segment)
    if signer.lower() != segment.miner.lower():
        raise Rejected(
            Rejection.BAD_SIGNATURE, f"signed by {signer}, but the segment names {segment.miner}"
        )
    if expected_miner is not None and signer.lower() != expected_miner.lower():
        raise Rejected(
            Rejection.BAD_SIGNATURE, f"signed by {signer}, expected miner {expected_miner}"
        )


# --- parsing untrusted input ---------------------------------------------------------


def misplaced(segment: Segment, steps: int, k: int) -> tuple[Rejection, str] | None:
    """Why ``segment`` cannot be segment ``index`` of a task of ``steps`` steps committed every
    ``k``, or None. Segment i starts at step i·k (else it is an old segment under a new index),
    runs to the next boundary or the last step, and is final exactly when it ends training.
    Spec-only: the validators check it at the door and the replay checks it again."""
    i, start = segment.index, segment.start_step
    if start != i * k:
        return (
            Rejection.REPLAYED_INDEX,
            f"index {i} covers steps from {i * k}, the segment starts at {start}",
        )
    if start >= steps:
        return Rejection.STEP_GAP, f"index {i} covers steps from {start} of {steps}"
    if segment.steps != min(k, steps - start):
        return (
            Rejection.STEP_GAP,
            f"segment {i} must have {min(k, steps - start)} steps, has {segment.steps}",
        )
    if segment.final != (segment.end_step == steps):
        final = str(segment.final).lower()
        return (
            Rejection.STEP_GAP,
            f"final is {final} for a segment ending at step {segment.end_step}",
        )
    return None


MAX_DEPTH = 8
"""Deepest JSON nesting ``parse`` decodes (a segment has 2 levels: dataSpec, world, ...)."""


def _bad(message: str) -> Rejected:
    return Rejected(Rejection.MALFORMED, message)


def _int_field(obj: Mapping[str, Any], name: str, minimum: int = 0) -> int:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _bad(f"{name}: must be an integer >= {minimum}")
    if value >= 2**256:
        raise _bad(f"{name}: out of uint256 range")
    return value


def _str_field(obj: Mapping[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise _bad(f"{name}: must be a string")
    return value


def _float_or_nan(value: Any, name: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"{name}: must be a number or null")
    return float(value)


def _world(value: Any) -> World:
    if not isinstance(value, Mapping) or set(value) != {"nnodes", "nprocPerNode", "worldSize"}:
        raise _bad("world: must be {nnodes, nprocPerNode, worldSize}")
    nnodes = _int_field(value, "nnodes", 1)
    nproc = _int_field(value, "nprocPerNode", 1)
    if _int_field(value, "worldSize", 1) != nnodes * nproc:
        raise _bad("world.worldSize: must equal nnodes * nprocPerNode")
    return World(nnodes=nnodes, nproc_per_node=nproc)


def parse(data: bytes | str | Mapping[str, Any]) -> Segment:
    """A Segment from untrusted JSON (bytes, text or a decoded object).

    Checks shape only; signatures and content are checked by ``check_signature``
    and ``pot.trainer.verification``. Raises only ``Rejected(MALFORMED, ...)``.
    """
    if isinstance(data, bytes | str):
        if len(data) > MAX_BYTES:
            raise _bad(f"segment larger than {MAX_BYTES} bytes")
        raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
        if jsonguard.too_deep(raw, MAX_DEPTH):
            raise _bad(f"JSON nested deeper than {MAX_DEPTH} levels")
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _bad(f"not JSON ({exc})") from None
    else:
        obj = data
    if not isinstance(obj, Mapping):
        raise _bad("segment must be a JSON object")
    unknown = set(obj) - _FIELDS
    missing = _FIELDS - set(obj)
    if unknown:
        raise _bad(f"unknown field(s): {', '.join(sorted(unknown))}")
    if missing:
        raise _bad(f"missing field(s): {', '.join(sorted(missing))}")
    task = _str_field(obj, "task")
    if not task or len(task) > 253 * 2:
        raise _bad("task: must be a non-empty task id")
    miner = _str_field(obj, "miner")
    if not _ADDRESS.match(miner):
        raise _bad("miner: must be a 0x address")
    for name in ("startCid", "endCid"):
        if not cids.is_valid(_str_field(obj, name)):
            raise _bad(f"{name}: not a CIDv1 (raw, sha2-256, base32)")
    hp = _str_field(obj, "hyperparamsHash")
    if not _HASH.match(hp):
        raise _bad("hyperparamsHash: must be 0x and 64 lower-case hex digits")
    signature = _str_field(obj, "signature")
    if not _SIGNATURE.match(signature):
        raise _bad("signature: must be 0x and 130 hex digits")
    steps = _int_field(obj, "steps", 1)
    if steps > MAX_STEPS:
        raise _bad(f"steps: more than {MAX_STEPS}")
    losses = obj.get("losses")
    if not isinstance(losses, list) or len(losses) != steps:
        raise _bad("losses: must be a list with one entry per step")
    spec = obj.get("dataSpec")
    if not isinstance(spec, Mapping):
        raise _bad("dataSpec: must be an object")
    metrics = obj.get("metrics")
    if not isinstance(metrics, Mapping) or not all(isinstance(k, str) for k in metrics):
        raise _bad("metrics: must be an object of numbers")
    final = obj.get("final")
    if not isinstance(final, bool):
        raise _bad("final: must be a boolean")
    world = _world(obj.get("world"))
    node_rank = _int_field(obj, "nodeRank")
    if node_rank >= world.nnodes:
        raise _bad("nodeRank: must be < world.nnodes")
    return Segment(
        task=task,
        index=_int_field(obj, "index"),
        node_rank=node_rank,
        miner=miner,
        start_step=_int_field(obj, "startStep"),
        steps=steps,
        start_cid=obj["startCid"],
        end_cid=obj["endCid"],
        data_spec=dict(spec),
        hyperparams_hash=hp,
        losses=tuple(_float_or_nan(x, "losses[]") for x in losses),
        world=world,
        final=final,
        metrics={k: _float_or_nan(v, f"metrics.{k}") for k, v in metrics.items()},
        store_url=_str_field(obj, "storeUrl"),
        signature=signature,
    )
