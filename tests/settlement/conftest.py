"""Fixtures for settlement tests: a dev chain (anvil and the in-process EVM), a deployed
PotSettlement with four validator keys (n=4, f=1, threshold 3), and helpers to sign and
submit allocations."""

from __future__ import annotations

import itertools
import json
import threading
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from pot import keys
from pot.settlement import allocations, contracts, devchain
from pot.settlement import chain as chaining

ETH = 10**18
KINDS = ["anvil", "evm"] if devchain.anvil_path() else ["evm"]
_names = itertools.count()


@dataclass
class World:
    """A chain with PotSettlement deployed and the keys that drive it."""

    dev: devchain.DevChain
    rpc: chaining.Chain
    deployer: keys.Key
    validators: list[keys.Key]
    address: str
    contract: Any
    funded: list[keys.Key] = field(default_factory=list)

    @property
    def chain_id(self) -> int:
        return self.rpc.chain_id

    def key(self, wei: int = ETH) -> keys.Key:
        """A fresh key holding ``wei`` for gas."""
        k = keys.generate()
        self.dev.fund(k.address, wei)
        return k

    def task(self) -> str:
        return f"ns/task-{next(_names)}"

    def fund_task(self, task: str, wei: int, funder: keys.Key | None = None) -> keys.Key:
        funder = funder or self.deployer
        self.rpc.transact(
            funder,
            self.contract.functions.fundTask(
                allocations.Allocation(task=task, round=0, payees=(), amounts=()).task_id
            ),
            abi=self.contract.abi,
            value=wei,
            what="fundTask",
        )
        return funder

    def sign(
        self,
        alloc: allocations.Allocation,
        signers: Sequence[keys.Key] | None = None,
        *,
        chain_id: int | None = None,
        contract: str | None = None,
    ) -> list[bytes]:
        """Signatures of ``signers`` (default: the first three validators), ascending by signer."""
        signers = list(signers if signers is not None else self.validators[:3])
        pairs = [
            (
                k.address,
                allocations.sign(k, alloc, chain_id or self.chain_id, contract or self.address),
            )
            for k in signers
        ]
        pairs.sort(key=lambda p: int(p[0], 16))
        return [bytes.fromhex(s.removeprefix("0x")) for _, s in pairs]

    def alloc_json(
        self, alloc: allocations.Allocation, signers: Sequence[keys.Key] | None = None
    ) -> dict[str, Any]:
        """What the validators serve at GET /v1/allocations/{ns}/{name}/{round}."""
        doc = allocations.to_json(alloc, chain_id=self.chain_id, contract=self.address, quorum=3)
        doc["signatures"] = [
            {
                "signer": k.address,
                "signature": allocations.sign(k, alloc, self.chain_id, self.address),
            }
            for k in (signers if signers is not None else self.validators)
        ]
        return doc

    def settle(
        self,
        alloc: allocations.Allocation,
        sigs: Sequence[bytes],
        sender: keys.Key | None = None,
        funder: str | None = None,
    ) -> Any:
        """``settle`` from ``funder``'s escrow (default: the deployer's, as ``fund_task``)."""
        fn = self.contract.functions.settle(
            *alloc.settle_args(sigs, funder or self.deployer.address)
        )
        return self.rpc.transact(sender or self.deployer, fn, abi=self.contract.abi, what="settle")

    def estimate_settle(
        self, alloc: allocations.Allocation, sigs: Sequence[bytes], funder: str | None = None
    ) -> int:
        fn = self.contract.functions.settle(
            *alloc.settle_args(sigs, funder or self.deployer.address)
        )
        return int(
            self.rpc.call(
                "settle",
                lambda: fn.estimate_gas({"from": self.deployer.address}),
                abi=self.contract.abi,
            )
        )

    def credit(self, account: str, token: str = "0x" + "00" * 20) -> int:
        return int(self.contract.functions.credits(token, account).call())

    def settled_events(self, task: str, round_: int) -> list[Any]:
        task_id = allocations.Allocation(task=task, round=0, payees=(), amounts=()).task_id
        logs = self.contract.events.Settled().get_logs(
            from_block=0, argument_filters={"taskId": task_id, "round": round_}
        )
        return list(logs)


def make_world(kind: str, *, withdrawal_delay: int = 3600) -> tuple[World, devchain.DevChain]:
    dev = devchain.start(kind)  # type: ignore[arg-type]
    rpc = chaining.Chain(url=dev.url)
    deployer = keys.generate()
    dev.fund(deployer.address, 1000 * ETH)
    validators = [keys.generate() for _ in range(4)]
    address = contracts.deploy_settlement(
        rpc, deployer, [v.address for v in validators], withdrawal_delay=withdrawal_delay
    )
    return World(
        dev=dev,
        rpc=rpc,
        deployer=deployer,
        validators=validators,
        address=address,
        contract=contracts.at(rpc, address),
    ), dev


@pytest.fixture(params=KINDS)
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    """A fresh chain and deployment per test, on anvil and on the in-process EVM."""
    w, dev = make_world(request.param)
    try:
        yield w
    finally:
        dev.close()


@pytest.fixture(scope="module", params=KINDS)
def shared_world(request: pytest.FixtureRequest) -> Iterator[World]:
    """One deployment per module and chain kind, for tests that only read or revert."""
    w, dev = make_world(request.param)
    try:
        yield w
    finally:
        dev.close()


class _Served:
    """A test fake's HTTP server on 127.0.0.1, served from a daemon thread."""

    def _serve(self, handler: type[BaseHTTPRequestHandler]) -> str:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _reply(h: BaseHTTPRequestHandler, code: int, data: bytes) -> None:
    h.send_response(code)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


class FakeValidator(_Served):
    """A stand-in for the validators' HTTP API (docs/protocol.md), until issue 6 lands.

    Serves ``GET /v1/allocations`` (the committed list) and
    ``GET /v1/allocations/{namespace}/{name}/{round}`` from ``self.docs``.
    """

    def __init__(self) -> None:
        self.docs: dict[tuple[str, int], dict[str, Any]] = {}
        self.requests = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.requests += 1
                parts = self.path.strip("/").split("/")
                if parts == ["v1", "allocations"]:
                    body: Any = {"allocations": [{"task": t, "round": r} for t, r in fake.docs]}
                elif len(parts) == 5 and parts[:2] == ["v1", "allocations"]:
                    body = fake.docs.get((f"{parts[2]}/{parts[3]}", int(parts[4])))
                else:
                    body = None
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                _reply(self, 200, json.dumps(body).encode())

            def log_message(self, *args: Any) -> None:
                return

        self.url = self._serve(Handler)

    def publish(self, doc: dict[str, Any]) -> None:
        self.docs[(doc["task"], int(doc["round"]))] = doc


@pytest.fixture
def validator() -> Iterator[FakeValidator]:
    v = FakeValidator()
    try:
        yield v
    finally:
        v.close()


SECRET = "SECRETKEY-d41d8cd98f00"
"""The API key tests put in RPC URLs' paths; it must never be shown."""


class FlakyRPC(_Served):
    """A hosted RPC provider in miniature: refuses the first ``failures`` requests with HTTP
    ``status`` (429 rate limit, 502/503 a gateway or restarting node), then forwards to
    ``upstream`` (a dev chain) or, without one, answers every call with chain id 31337.

    ``url`` carries ``SECRET`` in its path, as providers put their API key there.
    """

    def __init__(
        self, upstream: str | None = None, *, status: int = 429, failures: int = 0
    ) -> None:
        self.upstream, self.status, self.failures = upstream, status, failures
        self.requests = self.refused = 0
        lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with lock:
                    fake.requests += 1
                    refuse = fake.refused < fake.failures
                    fake.refused += refuse
                if refuse:
                    data, code = b"slow down", fake.status
                elif fake.upstream is not None:
                    req = urllib.request.Request(
                        fake.upstream, data=body, headers={"Content-Type": "application/json"}
                    )
                    with urllib.request.urlopen(req, timeout=30) as resp:
                        data, code = resp.read(), 200
                else:
                    call = json.loads(body)
                    data = json.dumps({"jsonrpc": "2.0", "id": call["id"], "result": "0x7a69"})
                    data, code = data.encode(), 200
                _reply(self, code, data)

            def log_message(self, *args: Any) -> None:
                return

        self.url = self._serve(Handler) + f"/v2/{SECRET}"
