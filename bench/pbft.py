"""PBFT throughput and commit latency (issue 6 "Performance").

Processes (n = 4, 7, 16): real ``python -m pot.validator`` replicas on
127.0.0.1 with the MAC'd TCP transport; replica 0 (the primary) runs a
closed-loop load of no-op requests and measures submit → execution (which
implies a 2f+1 commit). In-process (n = 31, 100): the pure cores exchange
encoded messages through an in-memory queue on one thread, so the number is
protocol + codec cost without sockets (n = 4 and 16 too, as the transport-free
reference for the n=16/n=4 ratio). Batch sizes 1 and 100 (the primary's most
requests per PRE-PREPARE). Goals: n=4 batched >= 10,000 req/s, unbatched
p50 <= 5 ms, n=16 >= 30% of n=4's throughput.

The requests are ``{"op":"noop"}``: well-formed, of a kind the application
answers with a refusal, so each costs the real ``App.execute`` path but no
audit. "CPU µs/req" is the CPU time of all replica processes per committed
request (from /proc), split into the primary's (which also runs the load) and
each backup's: on a shared 2-core machine req/s swings with whatever else
runs, this much less, so compare variants on it. The measuring window opens
only once every replica is up and the load has warmed up.

The n=16/n=4 ratio is the median over interleaved pairs (the table's pair and
two more, one more with ``quick``), since one pair swings by about ±0.05 with
the host's load. Besides req/s it is given by CPU, and projected for one core
per replica (the busiest process's CPU per request bounds throughput there;
a projection from the same runs, not a measurement).
"""

from __future__ import annotations

import collections
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import common

from pot.validator import actions, app, localnet, pbft, simulating
from pot.validator import messages as m


def processes(n: int, batch: int, seconds: float) -> dict[str, Any]:
    outstanding = 1 if batch == 1 else 2000
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        net = localnet.LocalNet(
            root,
            n,
            tuning={
                "checkpointInterval": 64,
                "batchSize": batch,
                "viewChangeTimeoutMs": 30000,
                "openClients": 1,  # the load runs under client "bench" (replica.bench_load)
            },
        )
        out = root / "bench.json"
        net.start(
            extra=(
                "--bench-seconds",
                str(seconds),
                "--bench-outstanding",
                str(outstanding),
                "--bench-out",
                str(out),
            )
        )
        started = out.with_name(out.name + ".start")
        try:
            # The primary opens the window once every replica is up and the load has warmed up.
            net.wait(started.exists, timeout=120, every=0.02)
            cpu0, t0 = _cpu(net), time.perf_counter()
            net.wait(out.exists, timeout=seconds + 60, every=0.02)
            cpu1, t1 = _cpu(net), time.perf_counter()
            result = dict(json.loads(out.read_text()))
        finally:
            net.close()
    if result["requests"] < common.MIN_SAMPLES_P99:
        # The replica's p99 is then only its slowest request (n=16 unbatched: ~50 in 2 s).
        result["p99_ms"] = None
    if cpu0 is not None and cpu1 is not None and result["rps"]:
        # CPU per committed request over the same window: on a shared machine this moves far
        # less than req/s does with whatever else runs. Replica 0 is the primary (and runs the
        # load); the rest are backups.
        us = [1e6 * (b - a) / (result["rps"] * (t1 - t0)) for a, b in zip(cpu0, cpu1, strict=True)]
        result["cpu_us_per_request"] = sum(us)
        result["primary_cpu_us_per_request"] = us[0]
        result["backup_cpu_us_per_request"] = sum(us[1:]) / len(us[1:])
        result["busiest_cpu_us_per_request"] = max(us)
    return result


def _cpu(net: localnet.LocalNet) -> list[float] | None:
    """User + system CPU seconds of each replica process, by id (Linux /proc), or None."""
    out = []
    try:
        tick = os.sysconf("SC_CLK_TCK")
        for _, p in sorted(net.procs.items()):
            fields = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
            out.append((int(fields[11]) + int(fields[12])) / tick)
    except (OSError, ValueError, IndexError):
        return None
    return out


def in_process(n: int, batch: int, requests: int) -> dict[str, Any]:
    f = (n - 1) // 3
    cfg = pbft.Config(
        n=n,
        f=f,
        checkpoint_interval=64,
        batch_size=batch,
        view_change_timeout_ms=10**9,
        open_clients=True,  # requests under client "bench"
    )
    secrets = [bytes([i % 256]) * 32 for i in range(n)]
    reps = [
        pbft.Replica(
            config=cfg,
            replica_id=i,
            app=app.App(
                app.Validators(
                    addresses=tuple(f"0x{i:040x}" for i in range(n)),
                    stakes=(1,) * n,
                    chain_id=1,
                    contract="0x" + "00" * 20,
                    f=f,
                )
            ),
            crypto=simulating.SimCrypto(i, secrets, random.Random(i)),
        )
        for i in range(n)
    ]
    queue: collections.deque[tuple[int, int, bytes]] = collections.deque()
    sent: dict[tuple[str, int], float] = {}
    lat: list[float] = []
    outstanding = 1 if batch == 1 else 4 * batch
    ts = 0

    def perform(i: int, acts: list[actions.Action]) -> None:
        nonlocal ts
        for a in acts:
            if isinstance(a, actions.Send):
                data = m.encode(a.msg)
                for dst in range(n) if a.to is None else (a.to,):
                    if dst != i:
                        queue.append((dst, i, data))
            elif isinstance(a, actions.Executed) and i == 0:
                for r in a.requests:
                    if r.key in sent:
                        lat.append(time.perf_counter() - sent.pop(r.key))
                        if ts < requests:
                            submit()

    def submit() -> None:
        nonlocal ts
        ts += 1
        req = m.Request(client="bench", ts=ts, op=b'{"op":"noop"}')
        sent[req.key] = time.perf_counter()
        perform(0, reps[0].submit(req))

    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(min(outstanding, requests)):
        submit()
    while queue:
        dst, src, data = queue.popleft()
        msg = m.decode(data)
        assert not isinstance(msg, m.Rejection)
        perform(dst, reps[dst].on_message(msg, src))
        if not queue and len(lat) < requests:
            perform(0, reps[0].on_tick(int((time.perf_counter() - start) * 1000)))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    p50, p99 = common.percentile(lat, 0.5), common.percentile(lat, 0.99)
    return {
        "requests": len(lat),
        "seconds": elapsed,
        "rps": len(lat) / elapsed,
        "cpu_us_per_request": 1e6 * cpu / len(lat),
        "p50_ms": None if p50 is None else 1000 * p50,
        "p99_ms": None if p99 is None else 1000 * p99,  # None under 100 requests
    }


def main(quick: bool = False) -> dict[str, Any]:
    seconds = 2.0 if quick else 5.0
    rows: list[list[Any]] = []
    results: dict[str, Any] = {}
    for n in (4, 7, 16):
        for batch in (1, 100):
            r = processes(n, batch, seconds)
            results[f"proc-n{n}-b{batch}"] = r
            cpu = r.get("cpu_us_per_request")
            split = (
                f"{cpu:.0f} ({r['primary_cpu_us_per_request']:.0f} + "
                f"{n - 1}×{r['backup_cpu_us_per_request']:.1f})"
                if cpu
                else ""
            )
            rows.append(
                [f"{n} (processes)", batch, round(r["rps"]), r["p50_ms"], r["p99_ms"], split]
            )
    # n = 4 and 16 in-process too: the same protocol and codec with no sockets, no event loop
    # and one thread, so their ratio is what n=16/n=4 can be before any transport cost.
    for n, reqs in (
        (4, 2000 if quick else 20000),
        (16, 1000 if quick else 6000),
        (31, 400 if quick else 2000),
        (100, 100 if quick else 400),
    ):
        for batch in (1, 100) if n > 16 else (100,):
            r = in_process(n, batch, reqs if batch == 100 else reqs // 10)
            results[f"inproc-n{n}-b{batch}"] = r
            cpu = r["cpu_us_per_request"]
            rows.append(
                [f"{n} (in-process)", batch, round(r["rps"]), r["p50_ms"], r["p99_ms"], round(cpu)]
            )
    # The n=16/n=4 ratio from one pair swings by ±0.05 with whatever else the host runs, so
    # measure more pairs, back to back (n=4 then n=16, interleaved), and take the median.
    pairs = [(results["proc-n4-b100"], results["proc-n16-b100"])]
    for _ in range(1 if quick else 2):
        pairs.append((processes(4, 100, seconds), processes(16, 100, seconds)))
    results["pairs"] = [{"n4": a, "n16": b} for a, b in pairs]
    n4 = results["proc-n4-b100"]["rps"]
    ratios = [b["rps"] / a["rps"] for a, b in pairs if a["rps"]]
    ratio = statistics.median(ratios) if ratios else 0.0
    goals = {
        "n4_batched_rps": n4,
        "n4_batched_goal_10k": n4 >= 10_000,
        "n4_unbatched_p50_ms": results["proc-n4-b1"]["p50_ms"],
        "n4_unbatched_p50_goal_5ms": (results["proc-n4-b1"]["p50_ms"] or 1e9) <= 5,
        "n16_over_n4_pairs": ratios,
        "n16_over_n4": ratio,
        "n16_goal_30pct": ratio >= 0.3,
    }
    by_cpu = [
        a["cpu_us_per_request"] / b["cpu_us_per_request"]
        for a, b in pairs
        if a.get("cpu_us_per_request") and b.get("cpu_us_per_request")
    ]
    if by_cpu:
        # What n16/n4 would be with both CPU-bound on the same cores: less noisy than req/s.
        goals["n16_over_n4_by_cpu"] = statistics.median(by_cpu)
        # Per replica: how much more CPU one backup spends per request at n=16 than at n=4 (the
        # extra PREPAREs and COMMITs). 1.0 would be no cost of the larger set at all.
        goals["backup_cpu_n16_over_n4"] = statistics.median(
            b["backup_cpu_us_per_request"] / a["backup_cpu_us_per_request"]
            for a, b in pairs
            if a.get("backup_cpu_us_per_request") and b.get("backup_cpu_us_per_request")
        )
        # Where every replica has a core of its own, the busiest process (the primary) bounds
        # throughput, not the sum: a projection from the same measurements, not a measurement.
        goals["n16_over_n4_projected_one_core_each"] = statistics.median(
            a["busiest_cpu_us_per_request"] / b["busiest_cpu_us_per_request"]
            for a, b in pairs
            if a.get("busiest_cpu_us_per_request") and b.get("busiest_cpu_us_per_request")
        )
    # The same ratio with no transport at all (one thread, in-process): on a machine where all
    # replicas share the cores, every replica executes every request, so this bounds the above.
    goals["n16_over_n4_in_process"] = (
        results["inproc-n4-b100"]["cpu_us_per_request"]
        / results["inproc-n16-b100"]["cpu_us_per_request"]
    )
    print(
        f"n=16 / n=4 (batch 100), {len(ratios)} interleaved pairs: "
        + ", ".join(f"{r:.2f}" for r in ratios)
        + f"; median {ratio:.2f} (goal 0.30)"
        + (f"; by CPU {goals['n16_over_n4_by_cpu']:.2f}" if by_cpu else "")
        + (
            f"; projected with one core per replica {goals['n16_over_n4_projected_one_core_each']:.2f}"
            f"; a backup's CPU per request at n=16 is {goals['backup_cpu_n16_over_n4']:.2f}x n=4's"
            if by_cpu
            else ""
        )
    )
    return common.report(
        "pbft",
        ["n", "batch", "committed req/s", "p50 ms", "p99 ms", "CPU µs/req (primary + backups)"],
        rows,
        results=results,
        goals=goals,
    )


if __name__ == "__main__":
    main(quick=True)
