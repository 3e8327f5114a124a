"""A development chain other processes can reach: anvil when installed, else an in-process EVM.

DESIGN §6: ``pot demo`` and the tests need an RPC URL that the validators' sidecars (separate
processes, pods on the local cluster) can call. anvil (npm ``@foundry-rs/anvil``, under
``.tools``) is a real node; without it, web3's in-process EVM (eth-tester + py-evm) is served
over HTTP JSON-RPC here, so every client talks to both the same way.

Accounts are funded by the chain's own means (``anvil_setBalance``; eth-tester's unlocked
genesis account) so no private key is ever written into this code.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

from pot import errors, urls
from pot.settlement import redacting

Kind = Literal["auto", "anvil", "evm"]

ANVIL = Path(__file__).resolve().parent.parent / ".tools" / "node_modules" / ".bin" / "anvil"
ANVIL_CHAIN_ID = 31337


def anvil_path() -> str | None:
    """The anvil binary from ``.tools`` (or PATH), or None."""
    if ANVIL.exists():
        return str(ANVIL)
    return shutil.which("anvil")


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (tests and the demo bind their servers to it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rpc(url: str, method: str, params: list[Any] | None = None, timeout: float = 30.0) -> Any:
    """One raw JSON-RPC call; ChainUnreachable / ChainError on failure."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    if not url.startswith(("http://", "https://")):
        raise errors.ConfigError(f"chain RPC URL {urls.redact(url)} is not http(s)")
    req = urllib.request.Request(  # noqa: S310 (scheme checked above)
        url, data=body.encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (scheme checked above)
            doc = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the response, and with it the connection
        raise errors.ChainUnreachable(f"chain RPC {urls.redact(url)}: HTTP {exc.code}") from exc
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        raise errors.ChainUnreachable(
            f"chain RPC {urls.redact(url)}: {redacting.scrub(str(exc), url)}"
        ) from exc
    if "error" in doc:
        message = redacting.scrub(str(doc["error"].get("message")), url)
        raise errors.ChainError(f"chain RPC {urls.redact(url)} {method}: {message}")
    return doc.get("result")


@dataclass(kw_only=True)
class DevChain:
    """A running development chain."""

    url: str
    """JSON-RPC endpoint, reachable from other processes on this machine."""
    kind: Literal["anvil", "evm"]
    chain_id: int
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)

    def call(self, method: str, *params: Any) -> Any:
        """A raw JSON-RPC call."""
        return rpc(self.url, method, list(params))

    def fund(self, address: str, wei: int) -> None:
        """Give ``address`` ``wei`` (replaces its balance on anvil, adds on the EVM)."""
        if self.kind == "anvil":
            self.call("anvil_setBalance", address, hex(wei))
        else:
            source = self.call("eth_accounts")[0]
            self.call(
                "eth_sendTransaction",
                {"from": source, "to": address, "value": hex(wei), "gas": hex(21_000)},
            )

    def mine(self, blocks: int = 1) -> None:
        """Mine empty blocks (confirmations in tests)."""
        if self.kind == "anvil":
            self.call("anvil_mine", hex(blocks))
        else:
            self.call("evm_mine", blocks)

    def set_automine(self, on: bool) -> None:
        """Mine each transaction on arrival (default) or leave it in the pool until ``mine``."""
        self.call("evm_setAutomine", on)

    def snapshot(self) -> str:
        """A snapshot id for ``revert``."""
        return str(self.call("evm_snapshot"))

    def revert(self, snapshot: str) -> None:
        """Roll the chain back to ``snapshot``: the blocks after it vanish (a reorg, in effect)."""
        self.call("evm_revert", snapshot)

    def reorg(self, depth: int) -> None:
        """Replace the last ``depth`` blocks by empty ones.

        anvil: ``anvil_reorg`` (the real thing). EVM: revert to the snapshot taken
        ``depth`` blocks ago is not possible after the fact, so tests use ``snapshot``/``revert``.
        """
        if self.kind != "anvil":
            raise errors.ChainError("reorg(depth) needs anvil; use snapshot()/revert() on the EVM")
        self.call("anvil_reorg", depth, [])

    def close(self) -> None:
        """Stop the chain."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> DevChain:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def start(kind: Kind = "auto", *, port: int = 0, host: str = "127.0.0.1") -> DevChain:
    """Start a development chain; ``auto`` picks anvil when present, else the in-process EVM."""
    if kind == "auto":
        kind = "anvil" if anvil_path() else "evm"
    port = port or free_port()
    if kind == "anvil":
        return _start_anvil(host, port)
    return _start_evm(host, port)


@contextlib.contextmanager
def running(kind: Kind = "auto") -> Iterator[DevChain]:
    """``with running() as chain:``."""
    chain = start(kind)
    try:
        yield chain
    finally:
        chain.close()


def _start_anvil(host: str, port: int) -> DevChain:
    binary = anvil_path()
    if binary is None:
        raise errors.ChainError("anvil is not installed (run `make install`)")
    proc = subprocess.Popen(
        [
            binary,
            "--host",
            host,
            "--port",
            str(port),
            "--chain-id",
            str(ANVIL_CHAIN_ID),
            "--hardfork",
            "cancun",
            "--silent",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            rpc(url, "eth_chainId", timeout=1)
            break
        except errors.ChainUnreachable:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise errors.ChainUnreachable(f"anvil did not start on {url}") from None
            time.sleep(0.05)
    return DevChain(url=url, kind="anvil", chain_id=ANVIL_CHAIN_ID, _process=proc)


# --------------------------------------------------------------------------- in-process EVM


def _wire(value: Any) -> Any:
    """web3's eth-tester results (ints, bytes, AttributeDicts) in JSON-RPC wire form."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_wire(v) for v in value]
    return value


class _EvmBackend:
    """eth-tester behind web3's own request formatting, one request at a time."""

    def __init__(self) -> None:
        from web3 import EthereumTesterProvider, Web3

        self.provider = EthereumTesterProvider()
        self.w3 = Web3(self.provider)
        self.request = self.provider.request_func(self.w3, self.w3.middleware_onion)
        self.lock = threading.Lock()

    def handle(self, method: str, params: list[Any]) -> dict[str, Any]:
        from eth_tester.exceptions import TransactionFailed

        tester: Any = self.provider.ethereum_tester
        with self.lock:
            try:
                # Methods anvil has and eth-tester names differently.
                if method == "evm_setAutomine":
                    if params[0]:
                        tester.enable_auto_mine_transactions()
                    else:
                        tester.disable_auto_mine_transactions()
                    return {"result": True}
                if method == "evm_increaseTime":
                    block = self.w3.eth.get_block("pending")
                    tester.time_travel(int(block["timestamp"]) + int(params[0], 0))
                    return {"result": True}
                if method == "evm_revert":
                    snap = params[0]
                    tester.revert_to_snapshot(int(snap, 0) if isinstance(snap, str) else snap)
                    return {"result": True}
                if method == "evm_mine" and params:
                    tester.mine_blocks(
                        int(params[0], 0) if isinstance(params[0], str) else params[0]
                    )
                    return {"result": "0x0"}
                response = self.request(method, params)
            except TransactionFailed as exc:
                return {"error": _revert_error(exc)}
            except Exception as exc:  # noqa: BLE001 (any backend failure becomes a JSON-RPC error)
                return {"error": {"code": -32000, "message": f"{type(exc).__name__}: {exc}"}}
        if "error" in response:
            return {"error": dict(response["error"])}
        return {"result": _wire(response.get("result"))}


def _revert_error(exc: BaseException) -> dict[str, Any]:
    """The geth/anvil shape of a revert (code 3, raw revert data) so web3 decodes custom errors."""
    # web3's tester provider re-raises TransactionFailed with a text message; the raw revert
    # bytes are on the exception it replaced.
    for candidate in (exc.__context__, exc):
        if candidate is None or not candidate.args:
            continue
        raw = candidate.args[0]
        if isinstance(raw, Exception) and raw.args:
            raw = raw.args[0]
        if isinstance(raw, bytes):
            return {"code": 3, "message": "execution reverted", "data": "0x" + raw.hex()}
    return {"code": 3, "message": f"execution reverted: {exc}", "data": "0x"}


def _start_evm(host: str, port: int) -> DevChain:
    backend = _EvmBackend()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            try:
                doc = json.loads(self.rfile.read(length))
            except ValueError:
                self._send(
                    {
                        "jsonrpc": "2.0",
                        "id": None,
                        "error": {"code": -32700, "message": "parse error"},
                    }
                )
                return
            if isinstance(doc, list):
                self._send([self._one(d) for d in doc])
            else:
                self._send(self._one(doc))

        def _one(self, doc: dict[str, Any]) -> dict[str, Any]:
            out = backend.handle(doc.get("method", ""), list(doc.get("params") or []))
            return {"jsonrpc": "2.0", "id": doc.get("id"), **out}

        def _send(self, doc: Any) -> None:
            body = json.dumps(doc).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # quiet: tests and the demo read logs of their own

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="pot-devchain", daemon=True)
    thread.start()
    url = f"http://{host}:{server.server_address[1]}"
    chain_id = int(rpc(url, "eth_chainId"), 16)
    return DevChain(url=url, kind="evm", chain_id=chain_id, _server=server)
