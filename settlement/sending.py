"""Getting one settle transaction per (task, round) final on chain, whatever happens.

The failure modes issue 7 names, and what answers each here:

- crash between broadcast and receipt: every signed attempt is in the intent log *before*
  it is broadcast; on restart ``resume`` rebroadcasts the same raw transaction, and any poll
  that finds the node does not know the newest attempt (a send that failed or never left)
  sends it again.
- stuck transaction (fees too low): after ``stuck_after`` seconds a new attempt with the same
  nonce and fees raised by more than 12.5% replaces it (nodes need >= 10%, geth's default;
  EIP-1559 base fee moves at most 12.5% a block).
- reorg: a receipt is trusted only while its block is canonical; until ``confirmations``
  blocks sit *on top of* the including block (``latest - block >= confirmations``), each
  poll checks it again, and a dropped or moved transaction is rebroadcast (the same raw
  bytes: it is still valid, its nonce came back with the reorg). A final intent is never
  looked at again, so ``confirmations`` is the deepest reorg survived: 0 trusts the head
  block, the default 1 survives a reorg of one block.
- our nonce used, but by none of our attempts (someone else sent with this key): the intent
  fails once that has held for ``orphan_grace`` seconds, since a node may show the new nonce
  a moment before the receipt, and the sidecar opens a new one after ``retry_after``.
- race with the other replicas' sidecars: "already settled" (the contract's AlreadySettled
  at estimate time, or our transaction reverting while the chain says settled) is success.

Nonces are managed locally (one writer per key): the next nonce is the larger of the node's
pending count and one past every nonce an open intent holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from web3 import exceptions as w3x

from pot import errors, keys
from pot.settlement import allocations, intents
from pot.settlement import chain as chaining

log = logging.getLogger(__name__)

# Fee bump: strictly more than 12.5% on both EIP-1559 fee fields.
BUMP_NUMERATOR, BUMP_DENOMINATOR = 9, 8

# Node answers to a broadcast that mean "nothing to do": the node has it, or the nonce is
# used (by one of our attempts or not); the receipt check decides.
_BENIGN = (
    "already known",
    "known transaction",
    "nonce too low",
    "invalid transaction nonce",
)
# Node answers meaning the sending account cannot pay the gas (geth and anvil; eth-tester).
_NO_FUNDS = ("insufficient funds", "cannot afford")


def no_gas_money(answer: str, address: str) -> str | None:
    """What to log when the node's ``answer`` says ``address`` cannot pay the gas, else None.

    An unfunded validator account leaves its task in Settling with nothing but this log
    (README, "Installing on a real cluster": the validators' accounts pay the settle's gas).
    """
    if not any(s in answer.lower() for s in _NO_FUNDS):
        return None
    return f"this validator's account {address} cannot pay its gas; send it ETH ({answer})"


def bumped(fee: int) -> int:
    """``fee`` raised by more than 12.5% (strictly: 9/8 rounded down, plus one wei)."""
    return fee * BUMP_NUMERATOR // BUMP_DENOMINATOR + 1


class Metrics:
    """``pot_settlement_*`` (DESIGN §7), in a registry per sidecar so tests can run several."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.outcomes = Counter(
            "pot_settlement_intents_total",
            "Settlement intents by outcome (final: settled by us; already: by another submitter)",
            ["outcome"],
            registry=r,
        )
        self.sent = Counter(
            "pot_settlement_transactions_sent_total", "Signed settle attempts broadcast", registry=r
        )
        self.rebroadcasts = Counter(
            "pot_settlement_rebroadcasts_total",
            "Same raw transaction sent again (restart, reorg)",
            registry=r,
        )
        self.fee_bumps = Counter(
            "pot_settlement_fee_bumps_total", "Replacements of a stuck transaction", registry=r
        )
        self.reorgs = Counter(
            "pot_settlement_reorgs_total", "Mined settles dropped or moved by a reorg", registry=r
        )
        self.rejections = Counter(
            "pot_settlement_rejections_total",
            "Settles the contract refused, by custom error",
            ["error"],
            registry=r,
        )
        self.rpc_errors = Counter(
            "pot_settlement_rpc_errors_total", "Chain RPC failures", registry=r
        )
        self.validator_errors = Counter(
            "pot_settlement_validator_errors_total",
            "Failures fetching allocations from the validator",
            registry=r,
        )
        self.open = Gauge(
            "pot_settlement_open_intents", "Intents whose transaction may still land", registry=r
        )
        self.last_tick = Gauge(
            "pot_settlement_last_tick_timestamp_seconds", "When the loop last turned", registry=r
        )


@dataclass(kw_only=True)
class Sender:
    """Signs, persists, broadcasts and follows settle transactions for one key."""

    chain: chaining.Chain
    key: keys.Key
    contract: Any
    """web3 contract object of PotSettlement."""
    log: intents.IntentLog
    metrics: Metrics
    confirmations: int = 1
    """Blocks required on top of the settle's block before the intent is final (>= 0)."""
    stuck_after: float = 30.0
    """Seconds without a receipt before the fees are bumped."""
    orphan_grace: float = 15.0
    """Seconds our nonce may show as used with no receipt of ours before the intent is lost."""
    fault: Callable[[str], None] = field(default=lambda point: None)
    """Test hook called at 'after-persist' and 'after-broadcast' (crash tests kill us there)."""

    # ------------------------------------------------------------------ opening

    def is_settled(self, task_id: bytes, round_: int, *, confirmed: bool = False) -> bool:
        """Whether the contract already credited (task_id, round); with ``confirmed``, in a
        block with ``confirmations`` blocks on top. Somebody else's settle (anyone may submit)
        still in the head block is no reason to stop: a reorg can drop it, and nobody may
        send it again (its sender's nonce can go to another transaction on the new branch).
        Taken as done at once, the round was never settled by any sidecar."""
        fn = self.contract.functions.settled(task_id, round_)
        if not confirmed or self.confirmations == 0:
            return bool(self.chain.call("settled", fn.call))
        latest = int(self.chain.call("blockNumber", lambda: self.chain.w3.eth.block_number))
        at = max(latest - self.confirmations, 0)
        return bool(self.chain.call("settled", lambda: fn.call(block_identifier=at)))

    def next_nonce(self) -> int:
        """Local nonce management: never reuse a nonce an open intent still holds."""
        pending = int(
            self.chain.call(
                "nonce",
                lambda: self.chain.w3.eth.get_transaction_count(
                    self.key.account.address, "pending"
                ),
            )
        )
        held = [i.nonce for i in self.log.all() if i.state in intents.OPEN and i.nonce >= 0]
        return max([pending, *(n + 1 for n in held)])

    def open(
        self,
        alloc: allocations.Allocation,
        signatures: Sequence[bytes],
        funder: str,
        *,
        retries: int = 0,
    ) -> intents.Intent:
        """Create, persist and broadcast the settle transaction for ``alloc``, paid from
        ``funder``'s escrow for the task."""
        intent = intents.Intent(
            task=alloc.task,
            round=alloc.round,
            task_id="0x" + alloc.task_id.hex(),
            state="sending",
            retries=retries,
        )
        fn = self.contract.functions.settle(*alloc.settle_args(signatures, funder))
        try:
            gas = int(
                self.chain.call(
                    "settle (estimate)",
                    lambda: fn.estimate_gas({"from": self.key.address}),
                    abi=self.contract.abi,
                )
            )
        except chaining.Reverted as exc:
            return self._refused(intent, exc)
        max_fee, tip = self.chain.fees()
        intent.nonce = self.next_nonce()
        # Headroom: estimates are exact for this state, but a slash or first-time payee can cost
        # more if state moves before inclusion.
        intent.gas = gas + gas // 5 + 20_000
        intent.to = str(self.contract.address)
        intent.data = str(fn._encode_transaction_data())
        self._attempt(intent, max_fee, tip)
        return intent

    def _refused(self, intent: intents.Intent, exc: chaining.Reverted) -> intents.Intent:
        task_id = bytes.fromhex(intent.task_id[2:])
        if exc.name == "AlreadySettled" and not self.is_settled(
            task_id, intent.round, confirmed=True
        ):
            # Settled in a block a reorg may still drop: not saved, the next poll looks again.
            intent.state, intent.error = "rejected", "AlreadySettled (not confirmed yet)"
            return intent
        if exc.name == "AlreadySettled":
            intent.state = "already"
            self.metrics.outcomes.labels("already").inc()
        else:
            intent.state = "rejected"
            intent.error = exc.name or str(exc)
            self.metrics.rejections.labels(exc.name or "unknown").inc()
            self.metrics.outcomes.labels("rejected").inc()
        self.log.save(intent)
        log.info("settle %s round %d: %s", intent.task, intent.round, exc.name or exc)
        return intent

    def _attempt(self, intent: intents.Intent, max_fee: int, tip: int) -> None:
        tx: dict[str, Any] = {
            "type": 2,
            "chainId": self.chain.chain_id,
            "nonce": intent.nonce,
            "to": intent.to,
            "data": intent.data,
            "value": 0,
            "gas": intent.gas,
            "maxFeePerGas": max_fee,
            "maxPriorityFeePerGas": tip,
        }
        signed = self.key.account.sign_transaction(tx)
        attempt = intents.Attempt(
            tx_hash="0x" + bytes(signed.hash).hex(),
            raw="0x" + bytes(signed.raw_transaction).hex(),
            max_fee=max_fee,
            tip=tip,
            sent_at=time.time(),
        )
        intent.attempts.append(attempt)
        intent.state = "sending"
        # Intent log before broadcast (issue 7): a crash after this line rebroadcasts these bytes.
        self.log.save(intent)
        self.fault("after-persist")
        self._broadcast(attempt)
        self.metrics.sent.inc()
        self.fault("after-broadcast")

    def _broadcast(self, attempt: intents.Attempt) -> bool:
        """Send ``attempt``'s raw bytes; whether the node took them or already has them.

        A refusal (fees under the base fee or the pool's minimum, "underpriced", no funds for
        gas) is logged, never raised: the attempt is persisted, and ``advance`` replaces it
        with a fee bump once it is ``stuck_after`` old. Raising here stalled the whole loop
        (every poll rebroadcast the refused bytes and raised before any bump, and before any
        other intent or allocation was looked at).
        """
        raw = bytes.fromhex(attempt.raw.removeprefix("0x"))
        try:
            self.chain.call(
                "sendRawTransaction",
                lambda: self.chain.w3.eth.send_raw_transaction(raw),
                retry=False,
            )
        except errors.ChainUnreachable:
            self.metrics.rpc_errors.inc()  # it is persisted: the next poll sends it again
            return False
        except errors.ChainError as exc:
            if any(s in str(exc).lower() for s in _BENIGN):
                return True
            why = no_gas_money(str(exc), self.key.address) or str(exc)
            log.warning("the node refused settle tx %s: %s", attempt.tx_hash, why)
            return False
        return True

    # ------------------------------------------------------------------ following

    def resume(self) -> None:
        """After a restart: rebroadcast the newest attempt of every open intent, unchanged."""
        self.log.clear_stale()
        for intent in self.log.all():
            if intent.state in intents.OPEN and intent.last is not None:
                log.info(
                    "resuming settle %s round %d (tx %s)",
                    intent.task,
                    intent.round,
                    intent.last.tx_hash,
                )
                self._broadcast(intent.last)
                self.metrics.rebroadcasts.inc()

    def advance(self, intent: intents.Intent) -> intents.Intent:
        """One poll of an open intent: receipts, confirmations, reorgs, fee bumps."""
        if intent.state not in intents.OPEN:
            return intent
        found = self._canonical_receipt(intent)
        if found is not None:
            attempt, receipt = found
            return self._mined(intent, attempt, receipt)
        if intent.state == "mined":
            # It was in a block and is not any more: a reorg dropped it (issue 7).
            self.metrics.reorgs.inc()
            log.warning(
                "settle %s round %d: tx %s dropped by a reorg, rebroadcasting",
                intent.task,
                intent.round,
                intent.tx_hash,
            )
            mined = next((a for a in intent.attempts if a.tx_hash == intent.tx_hash), intent.last)
            intent.state, intent.block_number, intent.block_hash = "sending", -1, ""
            self.log.save(intent)
            if mined is not None:
                self._broadcast(mined)
                self.metrics.rebroadcasts.inc()
            return intent
        latest_nonce = int(
            self.chain.call(
                "nonce",
                lambda: self.chain.w3.eth.get_transaction_count(self.key.account.address, "latest"),
            )
        )
        if latest_nonce > intent.nonce:
            # Our nonce is used but none of our attempts has a receipt: another transaction
            # from this key took it (one writer per key was broken) or a receipt was pruned.
            # Or not yet: a node can show the new nonce a moment before it stores the receipt
            # of the transaction that used it (anvil does, under load), so this is concluded
            # only once it has held for ``orphan_grace`` seconds.
            now = time.time()
            if not intent.orphaned_at:
                intent.orphaned_at = now
                self.log.save(intent)
            if now - intent.orphaned_at < self.orphan_grace:
                return intent
            return self._lost(intent, "nonce consumed by another transaction")
        last = intent.last
        if last is not None and not self._known(last):
            # Persisted but never heard of: its broadcast failed (the node was unreachable,
            # or the process died between the log and the send). The same bytes again, now,
            # rather than a fee bump ``stuck_after`` from now. If the node refuses them (the
            # base fee rose past their max fee while they were away), the bump below replaces
            # them once they are stuck.
            taken = self._broadcast(last)
            self.metrics.rebroadcasts.inc()
            if taken or time.time() - last.sent_at < self.stuck_after:
                return intent
        if last is not None and time.time() - last.sent_at >= self.stuck_after:
            max_fee, tip = self.chain.fees()
            new_fee, new_tip = max(bumped(last.max_fee), max_fee), max(bumped(last.tip), tip)
            log.info(
                "settle %s round %d: stuck for %.0fs, fee bump to %d/%d",
                intent.task,
                intent.round,
                time.time() - last.sent_at,
                new_fee,
                new_tip,
            )
            self.metrics.fee_bumps.inc()
            self._attempt(intent, new_fee, new_tip)
        return intent

    def _known(self, attempt: intents.Attempt) -> bool:
        """Whether the node has the attempt's transaction (pending or mined)."""
        w3 = self.chain.w3
        try:
            self.chain.call("transaction", lambda: w3.eth.get_transaction(attempt.tx_hash))  # type: ignore[arg-type]
        except errors.ChainError as exc:
            if isinstance(exc.__cause__, w3x.TransactionNotFound):
                return False
            raise
        return True

    def _canonical_receipt(self, intent: intents.Intent) -> tuple[intents.Attempt, Any] | None:
        w3 = self.chain.w3
        for attempt in reversed(intent.attempts):
            try:
                receipt = self.chain.call(
                    "receipt",
                    lambda a=attempt: w3.eth.get_transaction_receipt(a.tx_hash),  # type: ignore[misc]
                )
            except errors.ChainError as exc:
                if isinstance(exc.__cause__, w3x.TransactionNotFound):
                    continue
                raise
            # A receipt whose block is no longer the canonical one at that height is stale.
            block = self.chain.call("block", lambda r=receipt: w3.eth.get_block(r["blockNumber"]))  # type: ignore[misc]
            if block["hash"] == receipt["blockHash"]:
                return attempt, receipt
        return None

    def _mined(
        self, intent: intents.Intent, attempt: intents.Attempt, receipt: Any
    ) -> intents.Intent:
        block_hash = "0x" + bytes(receipt["blockHash"]).hex()
        if intent.state == "mined" and block_hash != intent.block_hash:
            self.metrics.reorgs.inc()  # re-included in another block by the reorg
            log.warning(
                "settle %s round %d: moved to block %s by a reorg",
                intent.task,
                intent.round,
                block_hash,
            )
        if receipt["status"] != 1:
            # Reverted on chain: lost the race to another sidecar, or state moved under us.
            if self.is_settled(bytes.fromhex(intent.task_id[2:]), intent.round, confirmed=True):
                intent.state = "already"
                intent.tx_hash = attempt.tx_hash
                self.metrics.outcomes.labels("already").inc()
                self.log.save(intent)
                return intent
            return self._lost(intent, f"transaction {attempt.tx_hash} reverted")
        intent.tx_hash = attempt.tx_hash
        intent.orphaned_at = 0.0
        intent.block_number = int(receipt["blockNumber"])
        intent.block_hash = block_hash
        latest = int(self.chain.call("blockNumber", lambda: self.chain.w3.eth.block_number))
        if latest - intent.block_number >= self.confirmations:  # blocks on top of ours
            intent.state = "final"
            self.metrics.outcomes.labels("final").inc()
            log.info(
                "settled %s round %d in block %d (tx %s)",
                intent.task,
                intent.round,
                intent.block_number,
                intent.tx_hash,
            )
        else:
            intent.state = "mined"
        self.log.save(intent)
        return intent

    def _lost(self, intent: intents.Intent, why: str) -> intents.Intent:
        if self.is_settled(bytes.fromhex(intent.task_id[2:]), intent.round, confirmed=True):
            intent.state = "already"
            self.metrics.outcomes.labels("already").inc()
        else:
            intent.state = "failed"
            intent.error = why
            self.metrics.outcomes.labels("failed").inc()
            log.warning("settle %s round %d failed: %s", intent.task, intent.round, why)
        self.log.save(intent)
        return intent
