"""``pot bench apiserver``: the local API server's create/get/list/watch throughput and p99 latency.

The server runs as ``pot local up`` starts it (its own process, fsync-ed
log in a temporary directory); the client is aiohttp with a fixed number of
concurrent requests. Baseline in the same run: ``GET /version`` (the cost of
one HTTP round trip through the server), so ``x_noop`` says how many no-op
requests one operation costs.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import common

from pot.localcluster import launching

CONCURRENCY = 8
NS = "/api/v1/namespaces/default/configmaps"


def _p(values: list[float], q: float) -> float | None:
    """Milliseconds, rounded; None where there are too few samples (a p99 needs 100)."""
    v = common.percentile(values, q)
    return None if v is None else round(v * 1e3, 2)


async def _run(
    session: aiohttp.ClientSession, url: str, n: int, make: Any
) -> tuple[float, list[float]]:
    lat: list[float] = []
    queue = list(range(n))

    async def worker() -> None:
        while queue:
            i = queue.pop()
            t0 = time.perf_counter()
            await make(session, url, i)
            lat.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.perf_counter() - t0, lat


async def _noop(s: aiohttp.ClientSession, url: str, _: int) -> None:
    async with s.get(url + "/version") as r:
        await r.read()


def _creator(prefix: str) -> Any:
    async def create(s: aiohttp.ClientSession, url: str, i: int) -> None:
        body = {
            "metadata": {"name": f"{prefix}-{i}", "labels": {"bench": prefix}},
            "data": {"i": str(i), "pad": "x" * 200},
        }
        async with s.post(url + NS, json=body) as r:
            assert r.status == 201, await r.text()
            await r.read()

    return create


def _getter(prefix: str) -> Any:
    async def get(s: aiohttp.ClientSession, url: str, i: int) -> None:
        async with s.get(f"{url}{NS}/{prefix}-{i}") as r:
            assert r.status == 200
            await r.read()

    return get


async def _watch_round(
    session: aiohttp.ClientSession, url: str, n: int, prefix: str
) -> tuple[float, list[float]]:
    """Create n objects while a watch is open: event throughput and create->event latency."""
    async with session.get(url + NS) as r:
        rv = (await r.json())["metadata"]["resourceVersion"]
    sent: dict[str, float] = {}
    lat: list[float] = []
    done = asyncio.Event()

    async def watcher() -> None:
        params = {"watch": "true", "resourceVersion": rv, "labelSelector": f"bench={prefix}"}
        async with session.get(
            url + NS, params=params, timeout=aiohttp.ClientTimeout(total=None)
        ) as resp:
            async for line in resp.content:
                ev = json.loads(line)
                name = ev["object"]["metadata"]["name"]
                lat.append(time.perf_counter() - sent.get(name, time.perf_counter()))
                if len(lat) >= n:
                    done.set()
                    return

    task = asyncio.create_task(watcher())
    await asyncio.sleep(0.2)
    create = _creator(prefix)

    async def timed(s: aiohttp.ClientSession, u: str, i: int) -> None:
        sent[f"{prefix}-{i}"] = time.perf_counter()
        await create(s, u, i)

    t0 = time.perf_counter()
    await _run(session, url, n, timed)
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - t0
    task.cancel()
    return elapsed, lat


async def _bench(url: str, sizes: list[int]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY * 2)) as s:
        el, lat = await _run(s, url, 2000, _noop)
        noop = 2000 / el
        rows.append(
            [
                "noop GET /version",
                2000,
                round(noop),
                _p(lat, 0.5),
                _p(lat, 0.99),
                1.0,
            ]
        )
        for n in sizes:
            prefix = f"b{n}"
            el, lat = await _run(s, url, n, _creator(prefix))
            rows.append(
                [
                    f"create @{n}",
                    n,
                    round(n / el),
                    _p(lat, 0.5),
                    _p(lat, 0.99),
                    round(noop / (n / el), 1),
                ]
            )
            el, lat = await _run(s, url, n, _getter(prefix))
            rows.append(
                [
                    f"get @{n}",
                    n,
                    round(n / el),
                    _p(lat, 0.5),
                    _p(lat, 0.99),
                    round(noop / (n / el), 1),
                ]
            )
            list_lat = []
            for _ in range(10):
                t0 = time.perf_counter()
                async with s.get(url + NS, params={"labelSelector": f"bench={prefix}"}) as r:
                    body = await r.read()
                list_lat.append(time.perf_counter() - t0)
                # Decoded outside the timed window: the client's JSON parse is not the server's.
                assert len(json.loads(body)["items"]) == n
            rows.append(
                [
                    f"list {n} objects",
                    10,
                    round(10 / sum(list_lat), 1),
                    _p(list_lat, 0.5),
                    _p(list_lat, 0.99),
                    round(noop * statistics.mean(list_lat), 1),
                ]
            )
            el, lat = await _watch_round(s, url, n, f"w{n}")
            rows.append(
                [
                    f"watch events @{n}",
                    n,
                    round(n / el),
                    _p(lat, 0.5),
                    _p(lat, 0.99),
                    round(noop / (n / el), 1),
                ]
            )
    return rows


def main(quick: bool = False) -> dict[str, Any]:
    sizes = [200, 1000] if quick else [1000, 10000]
    with tempfile.TemporaryDirectory(prefix="pot-bench-apiserver-") as tmp:
        directory = Path(tmp)
        launching.up(directory, components=[])
        try:
            url = launching.status(directory).url
            assert url is not None
            rows = asyncio.run(_bench(url, sizes))
        finally:
            launching.down(directory)
    return common.report(
        "apiserver",
        ["operation", "count", "ops/s", "p50 ms", "p99 ms", "x_noop"],
        rows,
        concurrency=CONCURRENCY,
        sizes=sizes,
        notes="x_noop: cost of one operation in no-op GET /version round trips (same run); "
        "list row: ops/s = lists per second, p50 per list of the whole set (10 lists: too few "
        "for a p99, given as null), timed to the last byte and decoded after; x_noop = noop/s "
        "times the mean list time; p99 is null wherever a row has under 100 samples.",
    )
