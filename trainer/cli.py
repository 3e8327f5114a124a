"""Command lines: ``python -m pot.trainer`` (train) and ``pot proof verify`` (audit).

The training command line is the one the operator puts in trainer pods
(docs/protocol.md, "Process command lines"); ``pot proof verify`` runs the
validators' replay check on one segment file, so anyone can audit a miner's
work offline: exit 0 when valid, 1 with the reason on one line when not.

Both need the TrainingTask's ``metadata.uid`` (``--task-uid``, or ``$POT_TASK_UID``, which
the operator sets in trainer pods): the run seed behind the initial weights and the data
order is derived from it (``tasks.task_seed``), so a chain only replays as its own task.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from pot import errors

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)


UID_HELP = "The TrainingTask's metadata.uid: the run seed is derived from it."


def _uid(value: str | None) -> str:
    """The task uid given on the command line or in the environment; ConfigError naming
    the option when there is none."""
    if not value:
        raise errors.ConfigError(
            "--task-uid (or $POT_TASK_UID): required, the TrainingTask's metadata.uid "
            "(kubectl get tt NAME -o jsonpath='{.metadata.uid}'); the run seed that builds "
            "the initial weights and the data order is derived from it"
        )
    return value


def _read_spec(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise errors.ConfigError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise errors.ConfigError(f"{path}: not a JSON task spec ({exc})") from None
    if not isinstance(doc, dict):
        raise errors.ConfigError(f"{path}: the spec must be a JSON object")
    return doc


@app.command()
def verify(
    segment: Path = typer.Argument(..., help="Segment JSON file."),
    *,
    store_dir: Path = typer.Option(..., "--store", help="Content store holding the checkpoints."),
    spec_file: Path | None = typer.Option(
        None, "--spec", help="Task spec JSON (default: STORE/specs/<hyperparamsHash>.json)."
    ),
    task: str | None = typer.Option(None, "--task", help="Task id the segment must name."),
    task_uid: str | None = typer.Option(None, "--task-uid", envvar="POT_TASK_UID", help=UID_HELP),
    store_url: bool = typer.Option(
        False, "--fetch", help="Also fetch missing blobs from the segment's storeUrl."
    ),
    nproc_per_node: int | None = typer.Option(
        None,
        "--nproc-per-node",
        min=1,
        help="Workers per node the gang ran (a hand run's torchrun --nproc-per-node); "
        "default: the spec's max(gpusPerNode, 1), as the operator launches.",
    ),
) -> None:
    """Replay SEGMENT from its start checkpoint; exit 0 if valid, 1 with the reason if not."""
    from pot import store
    from pot.trainer import segments, tasks, verification

    uid = _uid(task_uid)
    try:
        raw = segment.read_bytes()
    except OSError as exc:
        raise errors.ConfigError(f"{segment}: cannot read ({exc.strerror})") from None
    try:
        seg = segments.parse(raw)
    except segments.Rejected as exc:
        typer.echo(f"invalid: {exc}")
        raise typer.Exit(1) from None
    path = spec_file or store_dir / "specs" / f"{seg.hyperparams_hash}.json"
    if not path.exists() and spec_file is None:
        raise errors.ConfigError(
            f"no task spec for hyperparamsHash {seg.hyperparams_hash} in {path.parent}; pass --spec"
        )
    spec = tasks.from_spec(_read_spec(path), uid=uid)
    blobs: store.ContentStore = store.FilesystemStore(store_dir)
    if store_url and seg.store_url:
        blobs = store.LayeredStore(blobs, store.HttpStore(seg.store_url))
    world = None
    if nproc_per_node is not None:
        world = segments.World(nnodes=spec.nodes, nproc_per_node=nproc_per_node)
    policy = verification.Policy(task=task or seg.task, spec=spec, world=world)
    verdict = verification.verify_segment(seg, blobs, policy)
    typer.echo(verdict.line())
    raise typer.Exit(0 if verdict.valid else 1)


def train(  # noqa: PLR0917 (typer maps parameters to options)
    task: str = typer.Option(..., "--task", help="Task id namespace/name."),
    task_uid: str | None = typer.Option(None, "--task-uid", envvar="POT_TASK_UID", help=UID_HELP),
    spec_file: Path = typer.Option(..., "--spec", help="TrainingTask .spec as JSON."),
    store_dir: Path = typer.Option(..., "--store", help="This node's content store."),
    validator_url: str | None = typer.Option(None, "--validator-url", help="Validator API."),
    segments_dir: Path | None = typer.Option(
        None, "--segments-dir", help="Write segments here instead of POSTing them."
    ),
    miner_key_file: Path | None = typer.Option(
        None, "--miner-key-file", help="This node's miner key (else $POT_MINER_KEY)."
    ),
    advertise_url: str = typer.Option(
        "", "--advertise-url", help="URL validators fetch blobs from."
    ),
    state_dir: Path | None = typer.Option(
        None, "--state-dir", help="Resume state and outbox (default: STORE/../trainer-state)."
    ),
    port: int = typer.Option(
        8090, "--port", help="Blob store and /metrics port (0: any, -1: off)."
    ),
    cheat: str | None = typer.Option(
        None, "--cheat", help="Cheat on purpose: perturb-weights, skip-steps, swap-data."
    ),
    flush_timeout: float = typer.Option(30.0, "--flush-timeout", help="Seconds to drain at exit."),
    linger: float = typer.Option(
        600.0,
        "--linger",
        help="Seconds to keep serving checkpoints after training, until the validators "
        "decided this node's segments (0: exit at once).",
    ),
) -> None:
    """Train one rank of the gang (run under torchrun) and publish proof segments."""
    from pot import ids, keys, store
    from pot.trainer import cheating, publishing, serving, tasks, training

    ids.split_task_key(task)
    uid = _uid(task_uid)
    raw = _read_spec(spec_file)
    spec = tasks.from_spec(raw, uid=uid)
    layout = training.Layout.from_env()
    training.setup_logging(layout.rank)
    try:
        mode = cheating.Cheat(cheat) if cheat else None
    except ValueError:
        raise errors.ConfigError(
            f"--cheat: unknown mode {cheat!r} (perturb-weights, skip-steps, swap-data)"
        ) from None
    key = None
    if layout.local_rank == 0:
        key = keys.load(file=miner_key_file, env=None if miner_key_file else "POT_MINER_KEY")
    state = state_dir or store_dir.parent / "trainer-state" / task.replace("/", "_")
    try:
        opts = training.Options(
            task=task,
            spec=spec,
            raw_spec=raw,
            store_dir=store_dir,
            state_dir=state,
            key=key,
            validator_url=validator_url,
            segments_dir=segments_dir,
            advertise_url=advertise_url,
            cheat=mode,
            progress=sys.stderr.isatty(),
            flush_timeout=flush_timeout,
        )
    except ValueError as exc:
        raise errors.ConfigError(str(exc)) from None
    server = None
    if layout.local_rank == 0 and port >= 0:
        blobs = serving.PeerStore(store.FilesystemStore(store_dir))
        opts.on_peers = lambda urls: blobs.set_peers(urls, own=advertise_url)
        server = serving.Server(blobs, port=port).start()
    try:
        result = training.main(opts)
        if layout.rank == 0:
            print(json.dumps({"event": "done", **result}), flush=True)  # noqa: T201
        # Audits run after acknowledgement and fetch blobs from this node's store.
        miner = key.address if key is not None and server is not None else None
        if (
            miner is not None
            and validator_url
            and linger > 0
            and not publishing.wait_decided(
                validator_url, task, miner, expected=spec.segments, timeout=linger
            )
        ):
            typer.echo(f"warning: segments still undecided after {linger:.0f}s", err=True)
    finally:
        if server is not None:
            server.stop()


def main(argv: list[str] | None = None) -> None:
    """``python -m pot.trainer``: errors users cause print one line, no traceback."""
    command = typer.Typer(pretty_exceptions_enable=False, add_completion=False)
    command.command()(train)
    try:
        command(args=argv, standalone_mode=True)
    except errors.PotError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
