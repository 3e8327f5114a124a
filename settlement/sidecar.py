"""The settlement sidecar: watch this pod's validator, settle every committed allocation once.

DESIGN §4 step 5. Every validator pod runs one; any of them may submit, duplicates are
harmless (AlreadySettled), so one crashed sidecar never stalls settlement. Each sidecar
signs with its own replica's key (one writer per key: its nonces are managed locally in
``pot.settlement.sending``).

The loop is synchronous (web3's HTTP client) and runs in a worker thread; the asyncio side
serves ``/metrics`` and ``/healthz`` on port 8081 (docs/protocol.md "Ports").
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_utils import to_checksum_address

from pot import errors, ids, keys, observability, urls
from pot.settlement import allocations, contracts, intents, reading, redacting, sending
from pot.settlement import chain as chaining

log = logging.getLogger(__name__)

RPC_URL_ENV = "POT_CHAIN_RPC_URL"
"""Where the RPC URL arrives when the ValidatorSet keeps it in a Secret (``chain.rpcSecretRef``):
the operator then leaves ``chain.rpcUrl`` out of peers.json (docs/protocol.md)."""


def _check_rpc_url(url: str, source: str) -> None:
    if not url.startswith(("http://", "https://")):
        raise errors.ConfigError(f"{source} {urls.redact(url)} is not an http(s) URL")


@dataclass(kw_only=True, slots=True)
class Config:
    """What ``python -m pot.settlement`` is told (docs/protocol.md "Settlement sidecar")."""

    validator_url: str
    """This pod's validator, e.g. http://127.0.0.1:8080."""
    rpc_url: str
    """Chain JSON-RPC endpoint: ``--rpc-url``, else env ``POT_CHAIN_RPC_URL``, else peers.json
    ``chain.rpcUrl`` (see ``from_peers``). May hold an API key: shown only redacted."""
    contract: str
    """PotSettlement address (peers.json ``chain.contract``)."""
    state_dir: Path
    """Where the intent log lives (a persistent volume in the pod)."""
    chain_id: int | None = None
    """Expected chain id; a node answering another one is refused (signatures would not count)."""
    confirmations: int = 1
    """Blocks required on top of the settle's block before it counts as final (peers.json
    ``chain.confirmations``). 0: final once included (a reorg of that block then goes
    unnoticed); the default 1 survives a reorg of the head block."""
    interval: float = 2.0
    """Seconds between loop turns."""
    stuck_after: float = 30.0
    """Seconds without a receipt before a fee bump."""
    retry_after: float = 30.0
    """Seconds before a failed or rejected (task, round) is tried again."""
    port: int = 8081
    host: str = "0.0.0.0"  # noqa: S104 (a pod serves its metrics to the cluster)

    def __post_init__(self) -> None:
        if not self.validator_url.startswith(("http://", "https://")):
            raise errors.ConfigError(
                f"--validator-url {self.validator_url!r} is not an http(s) URL"
            )
        _check_rpc_url(self.rpc_url, "chain RPC URL")
        if self.confirmations < 0:
            raise errors.ConfigError(
                f"chain.confirmations must be >= 0 (blocks on top of the settle's block), "
                f"got {self.confirmations}"
            )
        if self.interval <= 0 or self.stuck_after <= 0:
            raise errors.ConfigError("interval and stuck_after must be positive")

    @classmethod
    def from_peers(
        cls,
        path: str | Path,
        *,
        rpc_url: str | None = None,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Config:
        """Read ``peers.json`` (the ValidatorSet's ConfigMap) for the chain settings.

        The RPC URL is the first of: ``rpc_url`` (``--rpc-url``), env ``POT_CHAIN_RPC_URL``
        (from ``chain.rpcSecretRef``; surrounding whitespace is dropped, as a Secret made from
        a file often ends in a newline), peers.json ``chain.rpcUrl``.
        """
        p = Path(path)
        env = os.environ if env is None else env
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
            chain_doc = doc["chain"]
            fields: dict[str, Any] = {
                "contract": to_checksum_address(chain_doc["contract"]),
                "chain_id": int(chain_doc["chainId"]) if "chainId" in chain_doc else None,
                "confirmations": int(chain_doc.get("confirmations", 1)),
            }
            in_file = chain_doc.get("rpcUrl")
        except FileNotFoundError:
            raise errors.ConfigError(f"--config {p}: no such file") from None
        except KeyError as exc:
            raise errors.ConfigError(f"--config {p}: bad chain section (no {exc})") from exc
        except (ValueError, TypeError, AttributeError) as exc:
            raise errors.ConfigError(f"--config {p}: bad chain section ({exc})") from exc
        from_env = env.get(RPC_URL_ENV, "").strip()
        if rpc_url:
            fields["rpc_url"], source = rpc_url, "--rpc-url"
        elif from_env:
            fields["rpc_url"], source = from_env, RPC_URL_ENV
        elif isinstance(in_file, str) and in_file:
            fields["rpc_url"], source = in_file, f"--config {p}: chain.rpcUrl"
        else:
            raise errors.ConfigError(
                f"no chain RPC URL: pass --rpc-url, set {RPC_URL_ENV} (what the operator does "
                f"for chain.rpcSecretRef) or put chain.rpcUrl in --config {p}"
            )
        _check_rpc_url(fields["rpc_url"], source)
        fields.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**fields)


@dataclass(kw_only=True)
class Sidecar:
    """One settlement loop."""

    config: Config
    key: keys.Key
    metrics: sending.Metrics = field(default_factory=sending.Metrics)
    sender: sending.Sender = field(init=False)
    last_tick: float = field(default=0.0, init=False)
    _resumed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.chain = chaining.Chain(url=self.config.rpc_url)
        self.contract = contracts.at(self.chain, self.config.contract)
        self.intent_log = intents.IntentLog(self.config.state_dir)
        self.sender = sending.Sender(
            chain=self.chain,
            key=self.key,
            contract=self.contract,
            log=self.intent_log,
            metrics=self.metrics,
            confirmations=self.config.confirmations,
            stuck_after=self.config.stuck_after,
        )

    # ------------------------------------------------------------------ validator API

    def _get(self, path: str) -> Any:
        url = self.config.validator_url.rstrip("/") + path
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 (scheme checked in Config)
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise errors.ProtocolError(f"validator {url}: HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise errors.ProtocolError(f"validator {url}: {exc}") from exc

    def committed(self) -> list[tuple[str, int]]:
        """(task, round) of every allocation the validators committed (``GET /v1/allocations``)."""
        doc = self._get("/v1/allocations") or {"allocations": []}
        out = []
        for entry in doc.get("allocations", []):
            try:
                out.append((str(entry["task"]), int(entry["round"])))
            except (KeyError, TypeError, ValueError):
                raise errors.ProtocolError(
                    f"validator /v1/allocations: bad entry {entry!r}"
                ) from None
        return out

    def fetch(self, task: str, round_: int) -> dict[str, Any] | None:
        """The signed allocation, or None while it is not committed (404)."""
        namespace, name = ids.split_task_key(task)
        path = (
            f"/v1/allocations/{urllib.parse.quote(namespace)}/{urllib.parse.quote(name)}/{round_}"
        )
        doc = self._get(path)
        return doc if isinstance(doc, dict) else None

    # ------------------------------------------------------------------ the loop

    def tick(self) -> None:
        """One turn: follow open intents, then open intents for new allocations."""
        if not self._resumed:
            self._check_chain()
            self.sender.resume()
            self._resumed = True
        for intent in self.intent_log.all():
            self._one(f"settle {intent.task} round {intent.round}", self.sender.advance, intent)
        try:
            committed = self.committed()
        except errors.ProtocolError as exc:
            self.metrics.validator_errors.inc()
            log.warning("%s", exc)
            committed = []
        for task, round_ in committed:
            self._one(f"allocation {task}/{round_}", self.settle, task, round_)
        self.metrics.open.set(sum(1 for i in self.intent_log.all() if i.state in intents.OPEN))
        self.last_tick = time.time()
        self.metrics.last_tick.set(self.last_tick)

    def _one(self, what: str, fn: Any, *args: Any) -> None:
        """``fn(*args)`` for one intent or allocation. A chain error that is about it alone (a
        node answering "gas required exceeds allowance" for an allocation too big for a
        block, say) is logged and the turn goes on to the others: raised, it ended every turn
        at the same place and no allocation after it was ever settled. An unreachable chain
        still ends the turn (every other call would wait out the same backoff)."""
        try:
            fn(*args)
        except errors.ChainUnreachable:
            raise
        except errors.ChainError as exc:
            self.metrics.rpc_errors.inc()
            answer = redacting.scrub(str(exc), self.config.rpc_url)
            log.warning("%s: %s", what, sending.no_gas_money(answer, self.key.address) or answer)

    def _check_chain(self) -> None:
        expected = self.config.chain_id
        if expected is not None and self.chain.chain_id != expected:
            raise errors.ConfigError(
                f"chain at {urls.redact(self.config.rpc_url)} has chainId {self.chain.chain_id}, "
                f"peers.json says {expected}"
            )

    def settle(self, task: str, round_: int) -> intents.Intent | None:
        """Settle (task, round) unless an intent for it is done or under way."""
        task_id = ids.chain_task_id(task)
        existing = self.intent_log.get("0x" + task_id.hex(), round_)
        retries = 0
        if existing is not None:
            if existing.state in intents.DONE or existing.state in intents.OPEN:
                return existing
            if time.time() - existing.updated_at < self.config.retry_after:
                return existing
            retries = existing.retries + 1
        if self.sender.is_settled(task_id, round_):
            if not self.sender.is_settled(task_id, round_, confirmed=True):
                return existing  # by somebody else, in a block a reorg may drop: wait
            intent = intents.Intent(
                task=task, round=round_, task_id="0x" + task_id.hex(), state="already"
            )
            self.intent_log.save(intent)
            self.metrics.outcomes.labels("already").inc()
            return intent
        try:
            doc = self.fetch(task, round_)
        except errors.ProtocolError as exc:
            self.metrics.validator_errors.inc()
            log.warning("%s", exc)
            return None
        if doc is None:
            return None
        try:
            alloc, pairs = allocations.parse(doc)
        except errors.ProtocolError as exc:
            self.metrics.validator_errors.inc()
            log.warning("validator allocation %s/%d: %s", task, round_, exc)
            return None
        registered = self.chain.call("validators", self.contract.functions.validators().call)
        threshold = int(self.chain.call("threshold", self.contract.functions.threshold().call))
        sigs, dropped = allocations.quorum(
            alloc,
            pairs,
            chain_id=self.chain.chain_id,
            contract=self.config.contract,
            registered=registered,
            threshold=threshold,
        )
        for signer, why in dropped.items():
            log.warning(
                "allocation %s/%d: signature of %s dropped (%s)", task, round_, signer, why.value
            )
        if len(sigs) < threshold:
            log.info(
                "allocation %s/%d: %d of %d signatures so far", task, round_, len(sigs), threshold
            )
            return None
        # Whose escrow pays (the contract keeps one per funder and task): the largest in the
        # allocation's signed token that covers it.
        found = reading.escrows(self.chain, self.config.contract, alloc.task_id)
        funder = reading.paying_funder(found, sum(alloc.amounts), alloc.token)
        if funder is None:
            log.info(
                "allocation %s/%d: the task is not funded yet (in %s)",
                task,
                round_,
                "ETH" if int(alloc.token, 16) == 0 else alloc.token,
            )
            return None
        return self.sender.open(alloc, sigs, funder, retries=retries)

    def ready(self) -> tuple[bool, str]:
        """/readyz: the loop turned recently."""
        if self.last_tick and time.time() - self.last_tick < max(30.0, 5 * self.config.interval):
            return True, "ready"
        return False, "settlement loop has not turned recently"

    async def run(self) -> None:
        """Serve /metrics and /healthz and turn the loop until cancelled."""
        from aiohttp import web

        app = web.Application()
        observability.add_routes(app, ready=self.ready, registry=self.metrics.registry)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port)
        await site.start()
        log.info(
            "settlement sidecar for %s on :%d, contract %s on %s",
            self.key.address,
            self.config.port,
            self.config.contract,
            urls.redact(self.config.rpc_url),
        )
        try:
            while True:
                try:
                    await asyncio.to_thread(self.tick)
                except errors.ChainUnreachable as exc:
                    self.metrics.rpc_errors.inc()
                    log.warning("%s", redacting.scrub(str(exc), self.config.rpc_url))
                except errors.ConfigError:
                    raise
                except errors.ChainError as exc:
                    self.metrics.rpc_errors.inc()
                    log.warning("chain error: %s", redacting.scrub(str(exc), self.config.rpc_url))
                await asyncio.sleep(self.config.interval)
        finally:
            await runner.cleanup()
