"""The rest of the issue's fault scenarios with real ``python -m pot.validator`` processes on
127.0.0.1 (``test_loopback`` covers a crash, a killed primary and a restart from disk):

- n = 7 with two replicas down, the primary among them;
- a partition that leaves no side a quorum, then heals (processes frozen with SIGSTOP: they
  neither send nor read, as if cut off, and SIGCONT heals it);
- an equivocating primary, played by this test with replica 0's key over the real MAC'd
  transport: it orders a client's request in two different batches for the same sequence
  number, one to each side;
- a primary forging requests under a correct replica's client name (same key and signature,
  another operation): refused by every correct backup, and replaced.

Safety check in each: every correct replica reports the same last executed sequence number
and the same state (the task views it serves) once the group settles.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from pot.validator import auth, localnet, transport
from pot.validator import messages as m

ROOT = Path(__file__).resolve().parents[2]
FAST = {"checkpointInterval": 16, "batchSize": 100, "viewChangeTimeoutMs": 1000}
pytestmark = pytest.mark.slow


def _spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "task.yaml").read_text())["spec"]
    return spec


def _register(net: localnet.LocalNet, via: int, task: str) -> None:
    doc = {"id": task, "spec": _spec(), "uid": f"uid-{task}"}
    code, body = net.post(via, "/v1/tasks", doc, timeout=10)
    assert code == 202, body  # "registered", or "pending" when it has not committed yet


def _settled(net: localnet.LocalNet, alive: list[int], tasks: list[str]) -> dict[int, Any]:
    """Wait until every replica in ``alive`` serves every task; then they must agree."""

    def views() -> dict[int, Any] | None:
        got = {i: [net.get(i, f"/v1/tasks/{t}") for t in tasks] for i in alive}
        return got if all(c == 200 for rs in got.values() for c, _ in rs) else None

    docs = net.wait(views, timeout=60, every=0.2)
    assert len({repr(d) for d in docs.values()}) == 1  # the same state everywhere

    def same_seq() -> dict[int, Any] | None:
        st = {i: net.get(i, "/v1/status")[1] for i in alive}
        return st if len({s["lastCommittedSeq"] for s in st.values() if s}) == 1 else None

    status: dict[int, Any] = net.wait(same_seq, timeout=30, every=0.2)
    return status


def test_n7_commits_with_two_replicas_down_the_primary_among_them(tmp_path: Path) -> None:
    net = localnet.LocalNet(tmp_path, 7, tuning=FAST)
    alive = [1, 2, 3, 5, 6]
    for i in alive:  # replicas 0 (view 0's primary) and 4 never come up
        net.start(i)
    try:
        net.wait_ready(alive, timeout=60)
        _register(net, 1, "default/seven")
        _register(net, 6, "default/seven-more")
        status = _settled(net, alive, ["default/seven", "default/seven-more"])
        assert all(s["view"] >= 1 and s["primary"] != 0 for s in status.values())
    finally:
        net.close()


def test_a_partition_without_a_quorum_stalls_then_heals(tmp_path: Path) -> None:
    net = localnet.LocalNet(tmp_path, 4, tuning=FAST)
    net.start()
    frozen = [2, 3]
    try:
        net.wait_ready(timeout=60)
        _register(net, 1, "default/before")
        _settled(net, [0, 1, 2, 3], ["default/before"])
        for i in frozen:
            net.procs[i].send_signal(signal.SIGSTOP)
        _register(net, 1, "default/cut-off")  # 2 of 4 can order nothing
        time.sleep(3)  # long past the 1 s view-change timeout: still nothing
        assert net.get(0, "/v1/tasks/default/cut-off")[0] == 404
        assert net.get(1, "/v1/tasks/default/cut-off")[0] == 404
        for i in frozen:
            net.procs[i].send_signal(signal.SIGCONT)
        _settled(net, [0, 1, 2, 3], ["default/before", "default/cut-off"])
        _register(net, 2, "default/after")  # and it goes on
        _settled(net, [0, 1, 2, 3], ["default/before", "default/cut-off", "default/after"])
    finally:
        for i in frozen:
            if i in net.procs:
                net.procs[i].send_signal(signal.SIGCONT)
        net.close()


CORRECT = [1, 2, 3]


@contextlib.asynccontextmanager
async def _played_primary(
    tmp_path: Path, lie: Callable[[transport.Transport, m.Request], None]
) -> AsyncIterator[localnet.LocalNet]:
    """Replicas 1-3 as processes; replica 0, view 0's primary, played by the test with its own
    key over the real MAC'd transport: ``lie`` gets every REQUEST forwarded to it."""
    net = localnet.LocalNet(tmp_path, 4, tuning=FAST)
    peers = auth.load_peers(net.config)

    def on_messages(peer: int, payloads: list[bytes]) -> None:
        for p in payloads:
            msg = m.decode(p)
            if isinstance(msg, m.Request):
                lie(liar, msg)

    liar = transport.Transport(
        me=0, authn=auth.Auth(0, net.keys[0], peers), on_messages=on_messages, on_reject=print
    )
    await liar.start("127.0.0.1", peers.replicas[0].pbft_port)
    for i in CORRECT:
        net.start(i)
    try:
        await asyncio.to_thread(net.wait_ready, CORRECT, 60)
        yield net
    finally:
        net.close()
        await liar.stop()


async def test_an_equivocating_primary_is_replaced_and_all_commit_the_same_log(
    tmp_path: Path,
) -> None:
    forwarded: list[m.Request] = []
    sent: list[tuple[int, m.PrePrepare]] = []

    def equivocate(liar: transport.Transport, msg: m.Request) -> None:
        if msg.key in {r.key for r in forwarded}:
            return
        forwarded.append(msg)
        # The same request, sequence number 1, two batches.
        for nonce, to in ((b"left", (1,)), (b"right", (2, 3))):
            pp = m.pre_prepare(view=0, seq=1, nonce=nonce, batch=(msg,), replica=0)
            for r in to:
                sent.append((r, pp))
                liar.send(r, m.encode(pp))

    async with _played_primary(tmp_path, equivocate) as net:
        await asyncio.to_thread(_register, net, 1, "default/equivocated")
        assert len({pp.digest for _, pp in sent}) == 2  # it did equivocate
        await asyncio.to_thread(_register, net, 3, "default/next")  # ordered in the new view
        status = await asyncio.to_thread(
            _settled, net, CORRECT, ["default/equivocated", "default/next"]
        )
        assert all(s["view"] >= 1 and s["primary"] != 0 for s in status.values())


async def test_a_primary_forging_a_replicas_requests_is_replaced(tmp_path: Path) -> None:
    """Replica 0, the view-0 primary, is played by this test with replica 0's key: for every
    request replica 1 forwards (signed, under its client name ``r1``), it proposes one with the
    same key and signature but another operation. Every correct backup refuses the batch
    (FORGED_REQUEST); replica 1's request stays pending, its multicast starts the backups'
    timers, and the next primary orders the real one."""
    forged: list[m.PrePrepare] = []

    def forge(liar: transport.Transport, msg: m.Request) -> None:
        if msg.client == "r1" and not forged:
            junk = msg._replace(op=b'{"op":"noop"}')  # r1's key and signature, not its op
            pp = m.pre_prepare(view=0, seq=1, nonce=b"forge", batch=(junk,), replica=0)
            forged.append(pp)
            for r in CORRECT:
                liar.send(r, m.encode(pp))

    async with _played_primary(tmp_path, forge) as net:
        await asyncio.to_thread(_register, net, 1, "default/forged")
        status = await asyncio.to_thread(_settled, net, CORRECT, ["default/forged"])
        assert forged, "the test's primary never saw r1's request"
        assert all(s["view"] >= 1 and s["primary"] != 0 for s in status.values())
        for i in CORRECT:  # each refused the forged batch, by name
            metrics = net.get(i, "/metrics", raw=True)[1]
            assert 'pot_validator_rejected_total{reason="FORGED_REQUEST"}' in metrics, i
        view = net.get(2, "/v1/tasks/default/forged")[1]
        assert view["registered"] and view["phase"] == "Registered"  # the real op executed
