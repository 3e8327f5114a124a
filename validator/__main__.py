"""``python -m pot.validator``: one PBFT validator replica (docs/protocol.md command line)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import sys
from pathlib import Path

from pot import errors, keys, quantities
from pot.validator import auditing, auth, replica


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pot.validator", description=__doc__)
    p.add_argument("--config", required=True, help="peers.json")
    p.add_argument("--replica-id", type=int, required=True)
    p.add_argument("--key-file", required=True, help="this replica's secp256k1 key (hex)")
    p.add_argument("--data-dir", required=True, help="PBFT log, checkpoints and the blob cache")
    p.add_argument("--bind", default="0.0.0.0", help="address to listen on")  # noqa: S104
    p.add_argument("--device", default="cpu", help="replay device (cpu or cuda)")
    p.add_argument("--max-concurrent", type=int, default=1, help="replays at once")
    p.add_argument(
        "--audit-memory",
        default="auto",
        help="bytes (a quantity: 8Gi) the audits' blob fetches hold at once; more waits "
        "(auto: half the container's memory limit, 8Gi without one)",
    )
    p.add_argument(
        "--auditor",
        default="replay",
        help="replay (default), or accept / reject:0xADDR,... for tests without torch",
    )
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--bench-seconds", type=float, default=0, help=argparse.SUPPRESS)
    p.add_argument("--bench-outstanding", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--bench-out", default="", help=argparse.SUPPRESS)
    return p


CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)
"""Where a container's memory limit shows (``auto`` budget: half of it)."""
_NO_LIMIT = 1 << 60  # cgroup v1 writes "no limit" as a page-rounded 2^63 - 1


def _limit(paths: tuple[Path, ...] = CGROUP_LIMITS) -> int | None:
    """The container's memory limit in bytes, None without one (or unreadable)."""
    for path in paths:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isascii() and text.isdigit() and 0 < int(text) < _NO_LIMIT:
            return int(text)
        return None  # "max", or v1's huge number: no limit
    return None


def _memory(value: str, paths: tuple[Path, ...] = CGROUP_LIMITS) -> int:
    """``--audit-memory`` in bytes. ``auto``: half the container's memory limit (the other
    half is the replica itself, the replays' models and the decoded checkpoints), 8 GiB
    where none is set."""
    if value == "auto":
        limit = _limit(paths)
        return 8 << 30 if limit is None else max(1, limit // 2)
    try:
        n = quantities.amount("memory", value)
    except errors.ConfigError as exc:
        raise errors.ConfigError(f"--audit-memory: {exc}") from None
    if n < 1:
        raise errors.ConfigError(f"--audit-memory: must be at least 1 byte, got {value!r}")
    return n


def _auditor(spec: str, data_dir: str, device: str, memory: int) -> auditing.Auditor:
    if spec == "replay":
        # Import torch now, before the PBFT loop runs: imported lazily on the first audit's
        # worker thread it held the GIL for seconds, the loop missed its timers and the
        # replica started a view change alone (tests/integration/test_train_to_allocation.py).
        from pot.trainer import verification  # noqa: F401

        return auditing.ReplayAuditor(f"{data_dir}/blobs", device, memory=memory)
    if spec == "accept":
        return auditing.Scripted()
    if spec.startswith("reject:"):
        return auditing.Scripted(frozenset(a for a in spec[7:].split(",") if a))
    raise errors.ConfigError(f"--auditor: unknown {spec!r}")


async def _run(args: argparse.Namespace) -> None:
    peers = auth.load_peers(args.config)
    if not 0 <= args.replica_id < peers.n:
        raise errors.ConfigError(f"--replica-id {args.replica_id}: not in 0..{peers.n - 1}")
    node = replica.Node(
        peers=peers,
        me=args.replica_id,
        key=keys.from_file(args.key_file),
        data_dir=args.data_dir,
        auditor=_auditor(args.auditor, args.data_dir, args.device, _memory(args.audit_memory)),
        max_concurrent_audits=args.max_concurrent,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await node.start(args.bind)
    # Everything made so far (modules, the node's tables) lives as long as the process: move it
    # out of the collector's way, so full collections walk only what requests make.
    gc.freeze()
    logging.getLogger("pot.validator").info(
        "replica %d of %d up (pbft :%d, http :%d)",
        args.replica_id,
        peers.n,
        peers.replicas[args.replica_id].pbft_port,
        peers.replicas[args.replica_id].http_port,
    )
    if peers.operator is None:
        logging.getLogger("pot.validator").warning(
            "%s names no operator: task registrations from any client are accepted "
            "(the pot operator always names itself; see docs/protocol.md, POST /v1/tasks)",
            args.config,
        )
    if args.bench_seconds > 0 and args.replica_id == 0:
        from pathlib import Path

        await node.bench_load(
            seconds=args.bench_seconds, outstanding=args.bench_outstanding, out=Path(args.bench_out)
        )
    await stop.wait()
    await node.stop()


GC_THRESHOLDS = (20_000, 20, 20)
"""The cyclic collector's thresholds (CPython's default is 700, 10, 10). A replica allocates a
few objects per request and per message, nearly all freed by reference counting; at the
default a backup ran ~55 young collections a second under load, ~12% of its CPU (measured on
a 16-replica loopback run, bench/pbft.py). Fewer, larger ones cost a third of that."""


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    gc.set_threshold(*GC_THRESHOLDS)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    try:
        asyncio.run(_run(args))
    except errors.PotError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        sys.exit(1)


if __name__ == "__main__":
    main()
