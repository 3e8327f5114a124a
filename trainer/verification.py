"""Replay verification: ``verify_segment(segment, store, policy) -> Verdict``.

The validator's half of Proof-of-Learning (Jia et al., S&P 2021, §4.2):
load the segment's start checkpoint, re-execute its k steps on the data the
data spec names, and compare the result with the committed end checkpoint,
under the task's distance (normalised L2, L-infinity or cosine) or, in
deterministic mode, bit for bit (the replayed end checkpoint must have the
committed CID).

Cheap checks run first, so a forged segment costs a validator little: shape,
task, signature, index and step arithmetic, the chain (``startCid`` is the
previous segment's ``endCid``; segment 0 starts from the checkpoint the run
seed builds), hyperparameters, world and data spec, finite losses, then the blobs
and their headers (a skipped optimizer step shows in the end header), and
only then the replay. A checkpoint blob is read only up to the size any checkpoint of the
task's model can take (``checkpoints.size_cap`` of its initial checkpoint: the same on
every replica, so the ``OVERSIZED_BLOB`` verdict is too), so a miner's store cannot make
a validator hold more than an honest checkpoint of the task would. Every failure the miner can cause is a ``Verdict`` with
a ``Rejection`` name, never an exception: validators log and vote on
verdicts. A spec the validator cannot build (a user module it cannot import,
a dataset blob that does not parse) raises ``ConfigError``: not the miner's
doing.

All nodes of a DDP gang commit the same start and end checkpoints for the
same steps, so the replay outcome is cached by content (CIDs, data spec,
losses, hyperparameters) and by what judges it (task, metric, threshold): a
validator replays a step range once, however many nodes' segments claim it;
each node's segment still gets its own signature, arithmetic and blob checks.
Blobs are fetched outside the lock that serialises replays.

Tolerance mode compares float tensors (weights, and each optimizer moment)
under the task's distance; everything else in the end checkpoint (header,
names, shapes, dtypes, integer buffers, optimizer step counts) must equal the
replay exactly (``checkpoints.mismatch``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from pot import cids, errors, store
from pot.trainer import checkpoints, data, models, segments, stepping, tasks

Rejection = segments.Rejection


@dataclass(kw_only=True, slots=True)
class Policy:
    """What a segment is checked against."""

    task: str
    """Task id the segment must name."""
    spec: tasks.TaskSpec
    """The registered task spec (hyperparameters, proof settings), read with the ``uid`` of
    the registration (never one a segment names): the run seed that every replayed
    quantity derives from mixes it in, so another task's chain does not replay here."""
    world: segments.World | None = None
    """Expected gang layout; None: the spec's (``expected_world``)."""
    expected_miner: str | None = None
    """The address the segment must be signed by (None: its ``miner`` field)."""
    previous: segments.Segment | None = None
    """The same miner's accepted segment index - 1, to check the chain."""
    used_indices: Mapping[int, str] | None = None
    """Digests already accepted from this miner by index (replay detection)."""
    metric: tasks.Metric | None = None
    """Override of the spec's distance metric."""
    threshold: float | None = None
    """Override of the spec's threshold."""
    loss_rtol: float = 1e-3
    """Relative tolerance on recorded losses (tolerance mode; deterministic is exact)."""
    device: str = "cpu"
    """Where to replay."""

    def __post_init__(self) -> None:
        if self.spec.uid is None:
            raise ValueError("spec.uid: required to verify (the task's registered uid)")
        if self.loss_rtol < 0:
            raise ValueError("loss_rtol: must be >= 0")
        if self.threshold is not None and self.threshold <= 0:
            raise ValueError("threshold: must be > 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """The outcome of verifying one segment."""

    valid: bool
    reason: Rejection | None = None
    detail: str = ""
    distance: float | None = None
    replayed: bool = False
    seconds: float = 0.0

    def line(self) -> str:
        """One line for logs and the CLI."""
        if self.valid:
            dist = "" if self.distance is None else f" (distance {self.distance:.3g})"
            return f"valid{dist}"
        name = self.reason.name if self.reason is not None else "UNKNOWN"
        return f"invalid: {name}: {self.detail}"


def expected_world(spec: tasks.TaskSpec) -> segments.World:
    """The gang the operator launches for ``spec``: ``resources.nodes`` pods of
    ``max(gpusPerNode, 1)`` workers (operator/builders_trainers.py sets
    ``PET_NPROC_PER_NODE`` so). A replay costs one micro-batch per rank per step,
    so a segment claiming a larger world would make the validator do more work."""
    return segments.World(nnodes=spec.nodes, nproc_per_node=max(spec.gpus_per_node, 1))


def _reject(reason: Rejection, detail: str, **kw: Any) -> Verdict:
    return Verdict(valid=False, reason=reason, detail=detail, **kw)


def distance(metric: tasks.Metric, replayed: torch.Tensor, committed: torch.Tensor) -> float:
    """Distance between flattened weight vectors (float64); cosine is 1 - cos, or the
    relative difference of the norms if larger."""
    if replayed.shape != committed.shape:
        return math.inf
    diff = replayed - committed
    if metric == "l2":
        return float(diff.norm() / max(float(committed.norm()), 1e-12))
    if metric == "linf":
        scale = max(float(committed.abs().max()), 1e-12) if committed.numel() else 1.0
        return float(diff.abs().max()) / scale if diff.numel() else 0.0
    # 1 - cos alone is blind to scale: weights committed at any multiple of the
    # replay's were at distance 0. The norms must agree to the same tolerance.
    mine, theirs = float(replayed.norm()), float(committed.norm())
    denom = max(mine * theirs, 1e-24)
    angle = 1.0 - float(replayed.dot(committed)) / denom
    return max(angle, abs(mine - theirs) / max(theirs, 1e-12))


# --- the replay itself -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Outcome:
    reason: Rejection | None
    detail: str
    distance: float | None


class _WrongData(Exception):
    """The replay's first loss is not the segment's: it stopped after one step."""

    def __init__(self, loss: float) -> None:
        super().__init__(loss)
        self.loss = loss


_lock = threading.Lock()
"""Held while a replay runs (it trains the shared built model) and around the caches;
never across a network fetch, so a slow miner's store stalls only its own audit."""
_builds: OrderedDict[tuple[str, str | None, int], tuple[models.Built, str, int]] = OrderedDict()
_outcomes: OrderedDict[bytes, _Outcome] = OrderedDict()
_CACHE = 64


def _initial(built: models.Built, spec: tasks.TaskSpec) -> bytes:
    optimizer = checkpoints.make_optimizer(spec, built.model.parameters())
    ckpt = checkpoints.capture(
        built.model, optimizer, step=0, optimizer_steps=0, seed=spec.run_seed
    )
    return checkpoints.encode(ckpt)


def initial_cid(built: models.Built, spec: tasks.TaskSpec) -> str:
    """CID of the task's initial checkpoint: the freshly built model at step 0 (call it
    before anything trains ``built.model``). Every chain must start here."""
    return cids.cid_of(_initial(built, spec))


def _built(spec: tasks.TaskSpec, blobs: store.ContentStore) -> tuple[models.Built, str, int]:
    """The spec's model and data, its initial checkpoint's CID and the most bytes any of
    its checkpoints can take (``checkpoints.size_cap``); cached: the dataset blob is
    fetched and the model built once per task."""
    # The run seed, not just the hyperparameters: twin tasks (equal specs, other uids)
    # build other weights and data, and one must never be judged from the other's build.
    key = (spec.hyperparams_hash(), spec.dataset_cid, spec.run_seed)
    with _lock:
        entry = _builds.get(key)
    if entry is not None:
        return entry
    dataset = models.load_dataset(spec, blobs)  # a network fetch: outside the lock
    with _lock:  # build seeds the global RNG; a replay must not run meanwhile
        entry = _builds.get(key)
        if entry is None:
            built = models.build(spec, dataset)
            raw = _initial(built, spec)
            entry = (built, cids.cid_of(raw), checkpoints.size_cap(raw))
            _builds[key] = entry
            while len(_builds) > 4:
                _builds.popitem(last=False)
    return entry


def clear_caches() -> None:
    """Forget built models and replay outcomes (tests; a validator short of memory)."""
    with _lock:
        _builds.clear()
        _outcomes.clear()


def replay(
    built: models.Built,
    spec: tasks.TaskSpec,
    dspec: data.DataSpec,
    start: checkpoints.Checkpoint,
    *,
    steps: int,
    device: torch.device,
    first_loss_ok: Callable[[float], bool] | None = None,
) -> tuple[checkpoints.Checkpoint, list[float]]:
    """Re-execute ``steps`` steps of every rank from ``start``; the end state and losses.

    ``first_loss_ok`` sees the first step's loss; if it returns False the replay
    stops there (``_WrongData``): a segment trained on other data costs one step."""
    model = built.model.to(device)
    optimizer = checkpoints.make_optimizer(spec, model.parameters())
    checkpoints.restore(start, model, optimizer)
    params = [p for p in model.parameters() if p.requires_grad]
    autocast = stepping.use_autocast(device, spec.deterministic)
    losses: list[float] = []
    buffers = stepping.ReplayBuffers(model)
    with stepping.deterministic(spec.deterministic):
        for step in range(start.step, start.step + steps):
            per_rank, rank_losses = [], []
            for rank in range(dspec.world_size):
                buffers.before(rank)
                loss = stepping.micro_loss(
                    built, model, dspec, step=step, rank=rank, device=device, autocast=autocast
                )
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                per_rank.append(
                    [
                        torch.zeros_like(p) if g is None else g
                        for g, p in zip(grads, params, strict=True)
                    ]
                )
                rank_losses.append(float(loss.detach().float()))
            buffers.after_step()
            for p, g in zip(params, stepping.combine(per_rank, dspec.world_size), strict=True):
                p.grad = g
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(stepping.mean_loss(rank_losses))
            if first_loss_ok is not None and len(losses) == 1 and not first_loss_ok(losses[0]):
                raise _WrongData(losses[0])
    end = checkpoints.capture(
        model,
        optimizer,
        step=start.step + steps,
        optimizer_steps=start.optimizer_steps + steps,
        seed=start.seed,
    )
    return end, losses


def _load(
    blobs: store.ContentStore, cid: str, what: str, cap: int
) -> checkpoints.Checkpoint | Verdict:
    try:
        raw = blobs.get(cid, max_bytes=cap)
    except errors.BlobTooLarge as exc:  # the same cap on every replica: the same verdict
        return _reject(
            Rejection.OVERSIZED_BLOB,
            f"{what} checkpoint {cid}: {exc} (the task's model caps a checkpoint at {cap})",
        )
    except errors.BlobNotFound as exc:
        return _reject(Rejection.MISSING_BLOB, f"{what} checkpoint {cid}: {exc}")
    except errors.BlobCorrupt as exc:
        return _reject(Rejection.CORRUPT_BLOB, f"{what} checkpoint: {exc}")
    except errors.StoreError as exc:
        return _reject(Rejection.MISSING_BLOB, f"{what} checkpoint {cid}: {exc}")
    try:
        return checkpoints.decode(raw)
    except errors.ProofError as exc:
        return _reject(Rejection.CORRUPT_BLOB, f"{what} checkpoint {cid}: {exc}")


def _close(a: float, b: float, rtol: float) -> bool:
    return a == b or abs(a - b) <= rtol * max(abs(a), abs(b), 1e-12)


def _replay_outcome(
    seg: segments.Segment,
    *,
    policy: Policy,
    spec: tasks.TaskSpec,
    dspec: data.DataSpec,
    built: models.Built,
    start: checkpoints.Checkpoint,
    end: checkpoints.Checkpoint,
) -> _Outcome:
    device = torch.device(policy.device)
    rtol = 0.0 if spec.deterministic else policy.loss_rtol
    try:
        replayed, losses = replay(
            built,
            spec,
            dspec,
            start,
            steps=seg.steps,
            device=device,
            first_loss_ok=lambda loss: _close(loss, seg.losses[0], rtol),
        )
    except errors.ProofError as exc:
        return _Outcome(Rejection.CORRUPT_BLOB, f"start checkpoint: {exc}", None)
    except _WrongData as exc:
        return _Outcome(
            Rejection.WRONG_DATA_SPEC,
            f"step {seg.start_step}: loss on the task's data is {exc.loss!r}, the segment "
            f"says {seg.losses[0]!r} (trained on other data)",
            None,
        )
    mine, theirs = replayed.weights(), end.weights()
    if not bool(torch.isfinite(mine).all()):
        return _Outcome(Rejection.NON_FINITE, "the replay diverged to NaN/Inf", None)
    metric = policy.metric or spec.metric
    dist = distance(metric, mine, theirs)
    wrong = checkpoints.mismatch(replayed, end)
    if wrong:  # fields a replay reproduces exactly, in either mode
        return _Outcome(Rejection.NOT_BIT_EXACT, f"end checkpoint: {wrong}", dist)
    if spec.deterministic:
        cid = cids.cid_of(checkpoints.encode(replayed))
        if cid != seg.end_cid:
            return _Outcome(
                Rejection.NOT_BIT_EXACT,
                f"replayed end checkpoint {cid} != {seg.end_cid} ({metric} distance {dist:.3g})",
                dist,
            )
    threshold = policy.threshold or spec.threshold
    if not dist <= threshold:
        return _Outcome(
            Rejection.DISTANCE_OVER_THRESHOLD,
            f"{metric} distance {dist:.3g} > threshold {threshold:.3g}",
            dist,
        )
    # The optimizer's moments carry the next segment's updates: forged ones would
    # move the chain without a replayable step, so they are held to the same bar.
    theirs_moments = end.moments()
    for key, vector in sorted(replayed.moments().items()):
        moved = distance(metric, vector, theirs_moments[key])
        if not moved <= threshold:
            return _Outcome(
                Rejection.DISTANCE_OVER_THRESHOLD,
                f"optimizer {key}: {metric} distance {moved:.3g} > threshold {threshold:.3g}",
                dist,
            )
    for i, (a, b) in enumerate(zip(losses, seg.losses, strict=True)):
        if not _close(a, b, rtol):
            return _Outcome(
                Rejection.LOSS_MISMATCH,
                f"step {seg.start_step + i}: replayed loss {a!r}, recorded {b!r}",
                dist,
            )
    if seg.final:
        wrong = _metrics_problem(seg, spec, built, end, device=device, rtol=policy.loss_rtol)
        if wrong:
            return _Outcome(Rejection.WRONG_METRICS, wrong, dist)
    return _Outcome(None, "", dist)


def _metrics_problem(
    seg: segments.Segment,
    spec: tasks.TaskSpec,
    built: models.Built,
    end: checkpoints.Checkpoint,
    *,
    device: torch.device,
    rtol: float,
) -> str:
    """Why a final segment's claimed metrics are not its committed weights' (or "").

    The metrics gate the bounty (``reward.targetMetric``), so they are recomputed
    from the committed end checkpoint, not taken on the miner's word. A
    relative tolerance (the loss one) absorbs evaluation on other hardware.
    """
    model = built.model.to(device)
    checkpoints.restore(end, model, checkpoints.make_optimizer(spec, model.parameters()))
    model.eval()
    try:
        with torch.no_grad():
            mine = built.evaluate(model)
    finally:
        model.train()
    for name, claimed in sorted(seg.metrics.items()):
        actual = mine.get(name)
        if actual is None:
            return f"metric {name!r}: the model's evaluate() has no such metric"
        if not _close(float(actual), float(claimed), rtol):
            return f"metric {name!r}: the end checkpoint evaluates to {actual!r}, the segment claims {claimed!r}"
    return ""


# --- the public entry point ----------------------------------------------------------------


def _static_checks(seg: segments.Segment, policy: Policy) -> Verdict | None:
    spec = policy.spec
    if seg.task != policy.task:
        return _reject(Rejection.WRONG_TASK, f"segment is for {seg.task!r}, not {policy.task!r}")
    try:
        segments.check_signature(seg, policy.expected_miner)
    except segments.Rejected as exc:
        return _reject(exc.reason, exc.detail)
    wrong = segments.misplaced(seg, spec.steps, spec.segment_steps)
    if wrong is not None:
        return _reject(*wrong)
    if policy.used_indices is not None:
        used = policy.used_indices.get(seg.index)
        if used is not None and used != segments.digest(seg):
            return _reject(Rejection.REPLAYED_INDEX, f"index {seg.index} already used")
    prev = policy.previous
    if prev is not None and seg.index != prev.index + 1:
        return _reject(
            Rejection.STEP_GAP, f"segment {seg.index} does not follow segment {prev.index}"
        )
    if prev is not None and seg.start_cid != prev.end_cid:
        return _reject(
            Rejection.BROKEN_CHAIN,
            f"segment {seg.index} starts from {seg.start_cid}, segment {prev.index} ended at "
            f"{prev.end_cid}",
        )
    if seg.hyperparams_hash != spec.hyperparams_hash():
        return _reject(Rejection.HYPERPARAMS_MISMATCH, "hyperparamsHash is not the task's")
    world = policy.world or expected_world(spec)
    if seg.world != world:
        return _reject(Rejection.WRONG_WORLD, f"world {seg.world.record()} != {world.record()}")
    if not all(math.isfinite(x) for x in seg.losses):
        return _reject(Rejection.NON_FINITE, "a recorded loss is NaN or infinite")
    return None


def verify_segment(
    segment: segments.Segment | bytes | str | Mapping[str, Any],
    blobs: store.ContentStore,
    policy: Policy,
) -> Verdict:
    """Check ``segment`` against ``policy``, replaying it from ``blobs``. Never raises
    for anything the miner controls; the verdict names the reason."""
    began = time.perf_counter()
    try:
        seg = segment if isinstance(segment, segments.Segment) else segments.parse(segment)
    except segments.Rejected as exc:
        return _reject(exc.reason, exc.detail)
    verdict = _static_checks(seg, policy)
    if verdict is not None:
        return verdict
    spec = policy.spec
    try:
        built, initial, cap = _built(spec, blobs)
    except errors.BlobCorrupt as exc:  # the miner served bytes that are not the dataset
        return _reject(Rejection.CORRUPT_BLOB, str(exc))
    except errors.StoreError as exc:
        return _reject(Rejection.MISSING_BLOB, str(exc))
    try:
        dspec = data.DataSpec.from_record(seg.data_spec)
    except segments.Rejected as exc:
        return _reject(exc.reason, exc.detail)
    run_seed = spec.run_seed
    expected = data.DataSpec(
        seed=run_seed,
        dataset=spec.dataset_ref,
        size=len(built.data),
        batch_size=spec.batch_size,
        world_size=seg.world.world_size,
    )
    if dspec != expected:
        return _reject(
            Rejection.WRONG_DATA_SPEC, f"data spec {dspec.record()} != {expected.record()}"
        )
    if seg.start_step == 0 and seg.start_cid != initial:
        # Without this anchor a miner could start from weights trained elsewhere and
        # every segment would still replay (Proof-of-Learning, Jia et al., §4: the
        # verifier must know the initialisation).
        return _reject(
            Rejection.BROKEN_CHAIN,
            f"segment 0 starts from {seg.start_cid}, not the task's initial checkpoint "
            f"{initial} (built from the run seed of task uid {spec.uid})",
        )
    # Everything that decides the outcome: a strict task must not be answered from a
    # lenient twin's replay of the same content (same hyperparameters, other tolerance).
    key = tasks.canonical_json(
        [
            policy.task,
            run_seed,
            seg.start_cid,
            seg.end_cid,
            seg.start_step,
            seg.steps,
            seg.hyperparams_hash,
            dspec.record(),
            list(seg.losses),
            [seg.final, dict(seg.metrics)],
            [policy.metric or spec.metric, policy.threshold or spec.threshold],
            [spec.deterministic, policy.loss_rtol, policy.device],
        ]
    )
    # Blobs are fetched and checked for every segment (each node must serve what it
    # claims), outside the lock; only the replay's outcome is shared by content.
    start = _load(blobs, seg.start_cid, "start", cap)
    if isinstance(start, Verdict):
        return start
    end = _load(blobs, seg.end_cid, "end", cap)
    if isinstance(end, Verdict):
        return end
    if start.step != seg.start_step or end.step != seg.end_step:
        return _reject(
            Rejection.STEP_GAP,
            f"checkpoints are at steps {start.step}..{end.step}, the segment claims "
            f"{seg.start_step}..{seg.end_step}",
        )
    taken = end.optimizer_steps - start.optimizer_steps
    if taken != seg.steps:
        return _reject(
            Rejection.STEP_GAP,
            f"{taken} optimizer steps between the checkpoints, the segment claims "
            f"{seg.steps} (a skipped step)",
        )
    if start.seed != run_seed or end.seed != run_seed:
        return _reject(
            Rejection.CORRUPT_BLOB,
            f"checkpoint RNG seeds {start.seed}, {end.seed}; the task's run seed is "
            f"{run_seed} (task uid {spec.uid})",
        )
    if not bool(torch.isfinite(end.weights()).all()):
        return _reject(Rejection.NON_FINITE, "end checkpoint has NaN/Inf weights")
    with _lock:
        cached = _outcomes.get(key)
        if cached is None:
            cached = _replay_outcome(
                seg, policy=policy, spec=spec, dspec=dspec, built=built, start=start, end=end
            )
            _outcomes[key] = cached
            while len(_outcomes) > _CACHE:
                _outcomes.popitem(last=False)
            replayed = True
        else:
            replayed = False
    seconds = time.perf_counter() - began
    if cached.reason is not None:
        return _reject(
            cached.reason,
            cached.detail,
            distance=cached.distance,
            replayed=replayed,
            seconds=seconds,
        )
    return Verdict(valid=True, distance=cached.distance, replayed=replayed, seconds=seconds)
