"""The DDP training loop that commits a proof segment every k steps.

Training runs at full speed and the proof rides along (Proof-of-Learning,
Jia et al., S&P 2021, §4.1: the prover's overhead is storing checkpoints and
the data order): per step there is no extra synchronisation; at a segment
boundary the ranks exchange their k losses once, every node's local rank 0
snapshots the state, and a background thread encodes, hashes, stores, signs
and queues the segment while the GPUs carry on.

Durability: a node's commit point is ``state.json`` (written atomically after
the end checkpoint is in the store and the signed segment is in the outbox),
so a killed trainer resumes from its last committed checkpoint, re-running at
most the segment in flight, with no duplicated or missing indices (``index =
startStep / k``). On (re)start the gang agrees on the furthest committed
checkpoint of any node; a node that is behind (it died before committing)
receives that checkpoint and the segment bodies it missed from the leader and
signs them as its own, so every node's index sequence stays contiguous.
A failed background commit (a full disk) stops the trainer at the next segment
boundary with a ``TrainingError``: training on would chain later segments to a
CID that was never stored, so ``state.json`` stays at the last good commit.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from prometheus_client import Counter, Gauge
from torch.nn.parallel import DistributedDataParallel

from pot import cids, errors, files, keys, store
from pot.trainer import (
    cheating,
    checkpoints,
    collectives,
    data,
    downloading,
    models,
    publishing,
    segments,
    stepping,
    tasks,
)

log = logging.getLogger("pot.trainer")

STEPS = Counter("pot_trainer_steps_total", "Optimizer steps completed by this node.")
SAMPLES_PER_SECOND = Gauge("pot_trainer_samples_per_second", "Gang-wide training throughput.")
LOSS = Gauge("pot_trainer_loss", "Mean training loss of the last committed step.")
SEGMENT = Gauge("pot_trainer_segment_index", "Index of the last committed segment.")
HISTORY = 16  # segment bodies kept in state.json for nodes that fall behind


@dataclass(kw_only=True, slots=True)
class Options:
    """One trainer process's configuration (from the command line)."""

    task: str
    """Task id ``namespace/name``."""
    spec: tasks.TaskSpec
    """The task spec."""
    raw_spec: dict[str, Any] = field(default_factory=dict)
    """The ``.spec`` JSON as given (kept beside the store for ``pot proof verify``)."""
    store_dir: Path
    """This node's content store."""
    state_dir: Path
    """Resume point and segment outbox (survives pod restarts)."""
    key: keys.Key | None = None
    """The node's miner key (local rank 0 only)."""
    validator_url: str | None = None
    """Where to POST segments."""
    segments_dir: Path | None = None
    """Write segments here instead of POSTing them."""
    advertise_url: str = ""
    """``storeUrl`` of this node's segments."""
    cheat: cheating.Cheat | None = None
    """Cheat on purpose (tests, demos)."""
    proof: bool = True
    """False trains plain DDP (the bench's baseline)."""
    progress: bool = False
    """Rich progress bar (interactive local rank 0)."""
    flush_timeout: float = 30.0
    """Seconds to wait at exit for validators to acknowledge queued segments."""
    on_step: Callable[[int], None] | None = field(default=None, repr=False)
    """Test hook called after every step."""
    on_peers: Callable[[list[str]], None] | None = field(default=None, repr=False)
    """Called once with every publishing node's ``advertise_url`` (the blob server
    answers misses from them: ``serving.PeerStore``)."""

    def __post_init__(self) -> None:
        if self.proof and (self.validator_url is None) == (self.segments_dir is None):
            raise ValueError("give exactly one of --validator-url and --segments-dir")
        if self.spec.uid is None:
            raise ValueError(
                "--task-uid (or $POT_TASK_UID): required, the TrainingTask's metadata.uid "
                "(the run seed is derived from it)"
            )


@dataclass(kw_only=True, slots=True)
class Layout:
    """Where this process sits in the gang (torchrun's environment)."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_rank: int

    @classmethod
    def from_env(cls) -> Layout:
        env = os.environ
        world = int(env.get("WORLD_SIZE", "1"))
        local_world = int(env.get("LOCAL_WORLD_SIZE", "1"))
        node = env.get("GROUP_RANK") or env.get("PET_NODE_RANK") or "0"
        return cls(
            rank=int(env.get("RANK", "0")),
            world_size=world,
            local_rank=int(env.get("LOCAL_RANK", "0")),
            local_world_size=local_world,
            node_rank=int(node),
        )

    @property
    def world(self) -> segments.World:
        return segments.World(
            nnodes=self.world_size // self.local_world_size, nproc_per_node=self.local_world_size
        )

    @property
    def publishes(self) -> bool:
        """Local rank 0 of each node stores checkpoints and publishes segments."""
        return self.local_rank == 0


class NodeState:
    """``state.json``: this node's last committed checkpoint and recent segments."""

    def __init__(self, path: Path, hyperparams_hash: str, uid: str) -> None:
        self.path = path
        self.hash = hyperparams_hash
        self.uid = uid
        self.step = -1
        self.cid = ""
        self.records: list[dict[str, Any]] = []
        if path.exists():
            doc = json.loads(path.read_text())
            if doc.get("hyperparamsHash") != hyperparams_hash:
                raise errors.ConfigError(
                    f"{path}: state of a task with other hyperparameters; refusing to resume"
                )
            if doc.get("uid") != uid:
                # Another TrainingTask object (deleted and re-created under the name): its
                # checkpoints come from another run seed and would never verify here.
                raise errors.ConfigError(
                    f"{path}: state of task object uid {doc.get('uid')!r}, not {uid!r}; "
                    "refusing to resume"
                )
            self.step, self.cid, self.records = doc["step"], doc["cid"], doc["records"]

    def commit(self, step: int, cid: str, record: dict[str, Any] | None) -> None:
        if record is not None:
            self.records = [*self.records, record][-HISTORY:]
        self.step, self.cid = step, cid
        doc = {
            "hyperparamsHash": self.hash,
            "uid": self.uid,
            "step": step,
            "cid": cid,
            "records": self.records,
        }
        files.write_atomic(self.path, json.dumps(doc, sort_keys=True).encode())

    @property
    def last_index(self) -> int:
        return int(self.records[-1]["index"]) if self.records else -1


class Trainer:
    """One rank of the gang."""

    def __init__(self, opts: Options, layout: Layout, device: torch.device) -> None:
        self.opts = opts
        self.layout = layout
        self.device = device
        spec = opts.spec
        self.spec = spec
        self.blobs = store.FilesystemStore(opts.store_dir)
        if downloading.fetch_dataset(spec, self.blobs):  # spec.dataset.url, once per node
            log.info(json.dumps({"event": "dataset", "cid": spec.dataset_cid, "fetched": True}))
        self.built = models.build(spec, models.load_dataset(spec, self.blobs))
        self.model = self.built.model.to(device)
        self.optimizer = checkpoints.make_optimizer(spec, self.model.parameters())
        self.dspec = data.DataSpec(
            seed=spec.run_seed,
            dataset=spec.dataset_ref,
            size=len(self.built.data),
            batch_size=spec.batch_size,
            world_size=layout.world_size,
        )
        self.autocast = stepping.use_autocast(device, spec.deterministic)
        self.optimizer_steps = 0
        self.state = NodeState(
            opts.state_dir / "state.json", spec.hyperparams_hash(), spec.uid or ""
        )
        self.publisher: publishing.Publisher | None = None
        if layout.publishes and opts.raw_spec:
            save_spec(opts.store_dir, spec, opts.raw_spec)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pot-commit")
        self._pending: list[Future[None]] = []
        self._commit_failed = False  # set by the commit thread; later commits are skipped
        self.losses: list[float] = []
        self._chain_cid = ""
        self.proof_seconds = 0.0  # main-thread time spent on the proof (bench)
        self.commit_cpu_seconds = 0.0  # CPU time of the commit thread (bench)

    # --- resume ---------------------------------------------------------------------------

    def _agree_on_start(self) -> tuple[int, str]:
        """All ranks: the gang's resume step and checkpoint CID (loaded into the model)."""
        mine = (
            {"step": self.state.step, "cid": self.state.cid, "last": self.state.last_index}
            if self.layout.publishes
            else None
        )
        states = collectives.all_gather_json(mine, self.device)
        best = max((s["step"] for s in states if s is not None), default=-1)
        if best < 0:  # a fresh gang: everyone builds the same initial weights from the seed
            ckpt = checkpoints.capture(
                self.model, self.optimizer, step=0, optimizer_steps=0, seed=self.spec.run_seed
            )
            cid = self.blobs.put(checkpoints.encode(ckpt)) if self.layout.publishes else ""
            if self.layout.publishes:
                self.state.commit(0, cid, None)
            return 0, cid
        leader = min(r for r, s in enumerate(states) if s is not None and s["step"] == best)
        mine_raw, mine_recs = b"", b""
        if self.layout.rank == leader:
            mine_raw = self.blobs.get(self.state.cid)
            mine_recs = json.dumps(self.state.records).encode()
        raw = collectives.broadcast_bytes(mine_raw, leader, self.device)
        records = json.loads(collectives.broadcast_bytes(mine_recs, leader, self.device))
        ckpt = checkpoints.decode(raw)
        checkpoints.restore(ckpt, self.model, self.optimizer)
        self.optimizer_steps = ckpt.optimizer_steps
        cid = cids.cid_of(raw)
        if self.layout.publishes and self.state.step < best:
            self.blobs.put(raw)
            for rec in records:
                if rec["index"] > self.state.last_index:
                    self._mint(rec)
            self.state.commit(best, cid, None)
        return best, cid

    def _mint(self, rec: dict[str, Any]) -> None:
        """Sign the leader's body of a segment this node missed as this node's own."""
        seg = dataclasses.replace(
            segments.parse(rec),
            node_rank=self.layout.node_rank,
            store_url=self.opts.advertise_url,
            signature="",
        )
        signed = self._publish(seg)
        self.state.records = [*self.state.records, signed.record()][-HISTORY:]

    def _key(self) -> keys.Key:
        if self.opts.key is None:
            raise errors.ConfigError("a miner key is needed to sign segments (--miner-key-file)")
        return self.opts.key

    def _publish(self, seg: segments.Segment) -> segments.Segment:
        signed = segments.sign(seg, self._key())
        if self.publisher is not None:
            self.publisher.enqueue(signed)
        return signed

    # --- commit (background thread on local rank 0) ------------------------------------------

    def _commit(
        self,
        ckpt: checkpoints.Checkpoint,
        *,
        start_step: int,
        losses: list[float],
        metrics: dict[str, float] | None,
    ) -> None:
        """Queue the commit of ``ckpt``; the single worker keeps segments in order and
        chains each start CID to the previous end CID."""

        def work() -> None:
            if self._commit_failed:  # chaining on would start from a stale CID
                raise errors.TrainingError("not committed: an earlier commit failed")
            try:
                commit()
            except BaseException:
                self._commit_failed = True
                raise

        def commit() -> None:
            cpu = time.thread_time()
            raw = checkpoints.encode(ckpt)
            end_cid = self.blobs.put(raw)
            seg = segments.Segment(
                task=self.opts.task,
                index=start_step // self.spec.segment_steps,
                node_rank=self.layout.node_rank,
                miner="0x" + "00" * 20,
                start_step=start_step,
                steps=ckpt.step - start_step,
                start_cid=self._chain_cid,
                end_cid=end_cid,
                data_spec=self.dspec.record(),
                hyperparams_hash=self.spec.hyperparams_hash(),
                losses=tuple(losses),
                world=self.layout.world,
                final=ckpt.step == self.spec.steps,
                metrics=metrics or {},
                store_url=self.opts.advertise_url,
            )
            signed = segments.sign(seg, self._key())
            self.state.commit(ckpt.step, end_cid, signed.record())
            self._chain_cid = end_cid
            if self.publisher is not None:
                self.publisher.enqueue(signed)
            SEGMENT.set(seg.index)
            log.info(
                json.dumps(
                    {
                        "event": "segment",
                        "index": seg.index,
                        "steps": [seg.start_step, seg.end_step],
                        "endCid": end_cid,
                        "loss": losses[-1],
                        "final": seg.final,
                    }
                )
            )
            self.commit_cpu_seconds += time.thread_time() - cpu

        self._check_commits()
        self._pending.append(self._pool.submit(work))

    def _check_commits(self, *, wait: bool = False) -> None:
        """Raise ``TrainingError`` if a background commit failed (all of them if ``wait``).

        Checked at every segment boundary: training on after a lost commit chained
        later segments to a CID no validator can fetch and moved ``state.json`` past
        the lost index, so the node earned nothing for the rest of the task. Stopping
        leaves ``state.json`` at the last good commit, where a restart resumes."""
        for fut in list(self._pending):
            if not (wait or fut.done()):
                continue
            self._pending.remove(fut)
            exc = fut.exception()
            if exc is not None:
                raise errors.TrainingError(
                    f"committing a segment failed ({exc}); state.json is at step "
                    f"{self.state.step}, where a restart resumes"
                ) from exc

    def _drain(self) -> None:
        self._check_commits(wait=True)

    # --- the loop ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Train to ``spec.steps``; returns a summary (final loss and metrics)."""
        opts, spec, layout = self.opts, self.spec, self.layout
        if opts.proof and layout.publishes:
            self.publisher = publishing.Publisher(
                opts.state_dir, validator_url=opts.validator_url, segments_dir=opts.segments_dir
            )
            for rec in self.state.records:  # segments committed but maybe never queued
                if not self.publisher.known(rec["index"]):
                    self.publisher.enqueue(segments.parse(rec))
            self.publisher.start()
        if opts.proof:
            urls = collectives.all_gather_json(
                opts.advertise_url if layout.publishes else None, self.device
            )
            peers = [u for u in urls if u]
            if opts.on_peers is not None:
                opts.on_peers(peers)
            if layout.publishes:
                log.info(json.dumps({"event": "peers", "storeUrls": peers}))
        step, self._chain_cid = self._agree_on_start() if opts.proof else (0, "")
        ddp = DistributedDataParallel(self.model)
        if spec.deterministic:
            ddp.register_comm_hook(None, stepping.ordered_mean_hook)
        k = spec.segment_steps
        began, done_samples = time.perf_counter(), 0
        progress = _progress(opts.progress and layout.publishes, spec.steps, step)
        with progress as bar, stepping.deterministic(spec.deterministic):
            task_id = bar.add_task("training", total=spec.steps, completed=step) if bar else None
            while step < spec.steps:
                seg_start, seg_steps = step, min(k, spec.steps - step)
                local = torch.zeros(seg_steps, dtype=torch.float32, device=self.device)
                for i in range(seg_steps):
                    if cheating.skips(opts.cheat, step, seg_start, seg_steps):
                        local[i] = local[i - 1] if i else 0.0
                    else:
                        loss = stepping.micro_loss(
                            self.built,
                            ddp,
                            self.dspec,
                            step=step,
                            rank=layout.rank,
                            device=self.device,
                            autocast=self.autocast,
                            data_seed_offset=cheating.data_seed_offset(opts.cheat),
                        )
                        loss.backward()
                        self.optimizer.step()
                        self.optimizer.zero_grad(set_to_none=True)
                        self.optimizer_steps += 1
                        local[i] = loss.detach().float()
                    step += 1
                    STEPS.inc()
                    if opts.on_step is not None:
                        opts.on_step(step)
                    if bar is not None and task_id is not None:
                        bar.update(task_id, completed=step)
                done_samples += seg_steps * spec.batch_size * layout.world_size
                SAMPLES_PER_SECOND.set(done_samples / max(time.perf_counter() - began, 1e-9))
                self.losses = self._gather_losses(local)
                LOSS.set(self.losses[-1])
                if not opts.proof:
                    continue
                stepping.broadcast_buffers(self.model)  # rank 0's, as DDP's next forward
                metrics = self._final_metrics() if step == spec.steps else None
                proof_began = time.perf_counter()
                if layout.publishes:
                    ckpt = checkpoints.capture(
                        self.model,
                        self.optimizer,
                        step=step,
                        optimizer_steps=self.optimizer_steps,
                        seed=spec.run_seed,
                    )
                    cheating.perturb(opts.cheat, ckpt.model, step)
                    self._commit(ckpt, start_step=seg_start, losses=self.losses, metrics=metrics)
                self.proof_seconds += time.perf_counter() - proof_began
        self._drain()
        metrics = self._final_metrics() if not opts.proof else self._last_metrics()
        left = self.publisher.close(opts.flush_timeout) if self.publisher is not None else 0
        if left:
            log.warning("%d segment(s) not yet acknowledged; kept in %s", left, opts.state_dir)
        return {
            "finalLoss": self.losses[-1] if self.losses else None,
            "metrics": metrics,
            "seconds": time.perf_counter() - began,
            "unacknowledged": left,
            "proofSeconds": self.proof_seconds,
            "commitCpuSeconds": self.commit_cpu_seconds,
        }

    def _last_metrics(self) -> dict[str, float]:
        recs = self.state.records
        return dict(recs[-1].get("metrics", {})) if recs and recs[-1].get("final") else {}

    def _gather_losses(self, local: torch.Tensor) -> list[float]:
        parts = [torch.empty_like(local) for _ in range(self.layout.world_size)]
        dist.all_gather(parts, local)
        per_step = torch.stack(parts).cpu().tolist()  # [rank][step]
        return [stepping.mean_loss([r[i] for r in per_step]) for i in range(len(local))]

    def _final_metrics(self) -> dict[str, float]:
        mine = b""
        if self.layout.rank == 0:
            self.model.eval()
            mine = json.dumps(self.built.evaluate(self.model)).encode()
            self.model.train()
        return dict(json.loads(collectives.broadcast_bytes(mine, 0, self.device)))

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _progress(enabled: bool, total: int, start: int) -> Any:
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeRemainingColumn(),
        transient=False,
    )


def save_spec(store_dir: Path, spec: tasks.TaskSpec, raw: dict[str, Any]) -> Path:
    """Keep the task spec at ``STORE/specs/<hyperparamsHash>.json`` for offline audits."""
    path = store_dir / "specs" / f"{spec.hyperparams_hash()}.json"
    files.write_atomic(path, json.dumps(raw, sort_keys=True, indent=1).encode())
    return path


def pick_device(spec: tasks.TaskSpec, layout: Layout) -> torch.device:
    """cuda:LOCAL_RANK for GPU tasks when CUDA is present, else CPU."""
    if spec.gpus_per_node > 0 and torch.cuda.is_available():
        return torch.device("cuda", layout.local_rank)
    return torch.device("cpu")


def main(opts: Options) -> dict[str, Any]:
    """Run this rank to completion (the body of ``python -m pot.trainer``)."""
    layout = Layout.from_env()
    device = pick_device(opts.spec, layout)
    if opts.spec.deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if opts.cheat is not None:
        log.warning("cheating on purpose: %s", opts.cheat.value)
    collectives.init_distributed(layout.rank, layout.world_size, device)
    trainer: Trainer | None = None
    try:  # the process group is torn down even when the spec cannot be built
        trainer = Trainer(opts, layout, device)
        result = trainer.run()
        dist.barrier()
        return result
    except RuntimeError as exc:  # torch.distributed failures surface as RuntimeError
        raise errors.TrainingError(f"rank {layout.rank}: {exc}") from exc
    finally:
        if trainer is not None:
            trainer.close()
        if dist.is_initialized():
            collectives.leave_process_group(layout.rank, layout.world_size)


def setup_logging(rank: int) -> None:
    """One JSON object per line on stderr (structured logs for the pod)."""

    class _Json(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            msg = record.getMessage()
            try:
                body = json.loads(msg) if msg.startswith("{") else {"msg": msg}
            except ValueError:
                body = {"msg": msg}
            return json.dumps(
                {
                    "ts": round(record.created, 3),
                    "level": record.levelname.lower(),
                    "logger": record.name,
                    "rank": rank,
                    **body,
                }
            )

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Json())
    root = logging.getLogger("pot")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
