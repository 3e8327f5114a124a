"""The replicated application: tasks, segments, audits, verdicts and allocations.

Deterministic by construction (PBFT §4 requires it of the service): it sees
only committed requests, in order, with their ``ExecContext``; no clock, no
randomness except what is derived from committed data, no floats in anything
that is signed. Every replica holds the same state after the same sequence
number, and its canonical JSON snapshot is what checkpoints hash.

Task lifecycle (issue 6):

1. ``register`` (from the operator, through any replica): the spec is parsed
   (``pot.trainer.tasks.from_spec`` plus the reward fields); the first
   registration wins, a different spec for the same id is ``TASK_EXISTS``.
2. ``segment`` (from trainers): the miner's EIP-712 signature is checked by
   the API *before* ordering and again here (a faulty primary could order an
   unchecked one). ``(miner, index)`` is idempotent; a different body under a
   taken index is ``CONFLICTING_SEGMENT``; node rank r (in range) is bound to
   the first address that signs for it. Addresses are normalised on the way in
   (keys lower-case, records checksummed): one miner, one payee, whatever the
   capitalisation. Chain: a miner's segment i must start where its
   segment i-1 ended (``startCid`` = ``endCid``), checked when both are in,
   whichever arrives first; the later one is refused ``BROKEN_CHAIN`` (not
   stored, listed in the task's rejections, not slashed: like
   ``CONFLICTING_SEGMENT``, a gang restarted from scratch after losing its
   state may honestly sign a second, slightly different chain). Index 0 must
   start from the task's initial checkpoint once one is recorded: the
   ``startCid`` of the first index-0 segment the auditors decided valid (they
   rebuild the checkpoint from the seed, ``pot.trainer.verification``). A
   missing segment i-1 leaves segment i unchecked against it, so only a
   miner's gap-free run of segments from index 0 earns (step 6).
3. Audit sampling is private: each replica draws, for every segment, its own
   coin from a secret only it holds (``audit_coin``: an HMAC under a key
   derived from its signing key) and replays the segment with the task's
   audit rate (sampleRate, or samplesPerEpoch / segments per node). Nobody
   else can predict the draw: not the miner, not a faulty primary (an earlier
   design seeded one public draw from the committed batch digest, which a
   primary colluding with a miner could grind until the draw missed). A
   private audit that passes stays private; one that fails is a *challenge*:
   the replica orders its signed invalid verdict, which makes the segment
   public. A node's ``final`` segment (its metrics gate the bounty) and its
   segment 0 (it anchors the chain to the seed's initial checkpoint; without
   it a miner could start from weights trained elsewhere and every later
   segment would replay) are public from the start.
4. Every replica audits every public segment (bounded concurrency, see
   ``auditing``). We chose all n over a 2f+1 subset: a subset of exactly 2f+1
   stalls when one auditor is faulty and reassignment would need a clock in
   the state machine; n/(2f+1) ≈ 1.33× replay cost buys liveness with f
   crashed auditors. A replica skips audits already decided.
5. ``verdict`` requests are signed by their replica (EIP-712, off-chain domain
   ``pot-verdict``) and ordered; the first 2f+1 decide, valid iff at least
   f+1 of them say valid (see ``_verdict``: the correct replicas' answer
   always wins, and split honest replays still decide).
   A segment nobody challenged is accepted without a public replay.
6. Each replica orders a signed ``audited`` request once every node's
   ``final`` segment is in and it has finished its private audits of the
   task (its challenges already ordered); an earlier one is ``NOT_READY``.
   A segment that arrives after the first ``audited`` is public, one after the
   2f+1-th is ``TASK_CLOSED`` (it would be paid with nobody's private draw).
   When 2f+1 have (so at least f+1 correct replicas looked), and every public
   segment is decided, round 0's allocation is computed (``rewards.allocate``):
   miners with a rejected segment are slashed their ``minerStake`` and get
   nothing. Work counts only in a miner's gap-free chain from index 0, and the
   target metric is read from a valid final segment such a chain reaches (the
   lowest rank's highest index; nothing depends on dict order, which
   ``restore`` changes). Each replica signs it (EIP-712 ``Allocation`` via
   ``pot.settlement.allocations``) and orders an ``allocsig`` request, so
   every replica serves the same ≥ 2f+1 signatures.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address

from pot import errors, ids, signing
from pot.settlement import allocations
from pot.trainer import segments, tasks
from pot.validator import closing, pbft, rewards, specs
from pot.validator import messages as m
from pot.validator.auditing import AUDIT_ERROR
from pot.validator.rejections import Rejection
from pot.validator.verdicts import (
    AUDITED_TYPES,
    VERDICT_DOMAIN,
    VERDICT_TYPES,
    verdict_message,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Validators:
    """Who the replicas are (from peers.json): addresses, stakes, the chain domain."""

    addresses: tuple[str, ...]
    stakes: tuple[int, ...]
    chain_id: int
    contract: str
    f: int
    operator: str | None = None
    """Who may register tasks (peers.json "operator"); None accepts anyone's registration."""

    @property
    def quorum(self) -> int:
        return 2 * self.f + 1


_DECODER = json.JSONDecoder()
MAX_OP_DEPTH = 128
"""Deepest op nesting decoded (the API stops bodies at 64; a faulty replica can order any op,
and the C decoder's recursion segfaults every replica that executes a deep one, on replay too)."""
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
"""One encoder for every replica's every result (``json.dumps`` with options builds a new one
per call, which was half the cost of executing a small request)."""


def canonical(value: Any) -> bytes:
    return _CANONICAL.encode(value).encode()


def op(kind: str, **body: Any) -> bytes:
    """The bytes of an application request."""
    return canonical({"op": kind, **body})


class App:
    """The validators' replicated state machine (implements ``pbft.Application``)."""

    def __init__(self, validators: Validators) -> None:
        self.v = validators
        self.tasks: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------ execution

    def execute(self, request: m.Request, ctx: pbft.ExecContext) -> bytes:
        try:
            # Ops are canonical JSON in UTF-8 (``op``): no encoding to sniff, no whitespace
            # around; anything else is refused, the same way on every replica.
            if m.too_deep(request.op, MAX_OP_DEPTH):
                return _MALFORMED
            text = request.op.decode()
            doc, end = _DECODER.raw_decode(text)
            if end != len(text):
                return _MALFORMED
            kind = doc["op"] if isinstance(doc, dict) else None
            if kind == "register":
                result = self._register(doc)
            elif kind == "segment":
                result = self._segment(doc)
            elif kind == "verdict":
                result = self._verdict(doc)
            elif kind == "allocsig":
                result = self._allocsig(doc)
            elif kind == "audited":
                result = self._audited(doc)
            else:
                return _MALFORMED
        except (ValueError, KeyError, TypeError, AttributeError, errors.PotError) as exc:
            log.debug("request rejected: %s", exc)
            return _MALFORMED
        return canonical(result)

    def signed_by_operator(
        self, task: str, spec: Any, miners: list[str], signature: Any, uid: str
    ) -> bool:
        """Whether a registration may be ordered: this set names no operator, or the operator
        signed ``Register{task, uid, specHash, miners}`` (docs/protocol.md, ``POST /v1/tasks``)."""
        if self.v.operator is None:
            return True
        try:
            signer = signing.registration_signer(str(signature), task, spec, miners, uid)
        except errors.ProtocolError:
            return False
        return signer.lower() == self.v.operator.lower()

    def _register(self, doc: dict[str, Any]) -> dict[str, Any]:
        task, spec = doc["task"], doc["spec"]
        miners = [str(a).lower() for a in doc.get("miners") or []]
        ids.split_task_key(task)
        # Checked here, by every replica, not only at the HTTP API: a faulty replica can order
        # any request, and the registration decides who can earn the task's escrow.
        uid = doc.get("uid")
        try:  # every replay of the task derives its run seed from this uid (and no other)
            uid = tasks.check_uid(uid)
        except errors.ConfigError as exc:
            return {**_no(Rejection.BAD_SPEC), "detail": str(exc)}
        if not self.signed_by_operator(task, spec, miners, doc.get("signature"), uid):
            return _no(Rejection.NOT_OPERATOR)
        if task in self.tasks:
            t = self.tasks[task]
            if t["uid"] != uid:
                # The same name, another TrainingTask object: its escrow id (from the name) is
                # the old one's, which may be settled already. Say so, mirror nothing.
                return {
                    **_no(Rejection.TASK_EXISTS),
                    "detail": "the name was registered by an earlier TrainingTask (deleted "
                    "since?); on-chain task ids come from namespace/name, so use a new name",
                }
            same = t["spec"] == spec and t.get("miners", []) == miners
            return {"ok": same, "id": task} if same else _no(Rejection.TASK_EXISTS)
        try:
            info = specs.check_spec(spec)
        except errors.ConfigError as exc:
            return {**_no(Rejection.BAD_SPEC), "detail": str(exc)}
        if miners and len(miners) != info["nodes"]:
            return {**_no(Rejection.BAD_SPEC), "detail": "miners: one address per node rank"}
        self.tasks[task] = {
            "spec": spec,
            "uid": uid,
            "info": info,
            "miners": miners,
            # Node rank -> the miner address it pays. Bound by the operator's registration;
            # without one (hand-made sets), by the first valid segment of each rank.
            "ranks": {str(r): a for r, a in enumerate(miners)},
            "segments": {},
            "rejections": [],
            "allocation": None,
            "signatures": {},
            "initialCid": None,
        }
        return {"ok": True, "id": task}

    def _segment(self, doc: dict[str, Any]) -> dict[str, Any]:
        try:
            seg = segments.parse(doc["segment"])
            segments.check_signature(seg)
        except segments.Rejected as exc:
            return {"ok": False, "reason": exc.reason.name}
        t = self.tasks.get(seg.task)
        if t is None:
            return _no(Rejection.UNKNOWN_TASK)
        if t["allocation"] is not None:
            return _no(Rejection.TASK_CLOSED)
        # One spelling per address: keys lower-case, payees, slashes and views checksummed, so
        # no capitalisation of ``miner`` splits one miner into a slashed one and a paid one.
        miner = seg.miner.lower()
        payee = to_checksum_address(miner)
        # Range first: an out-of-range rank must not bind (and grow the state).
        if not 0 <= seg.node_rank < t["info"]["nodes"]:
            return _no(Rejection.UNKNOWN_MINER)
        # Spec-only shape checks at the door too (the replay makes them again): an index past
        # the last segment would sit in the state for good.
        if (misplaced := specs.misplaced(t["info"], seg)) is not None:
            return {"ok": False, "reason": segments.Rejection.STEP_GAP.name, "detail": misplaced}
        bound = t["ranks"].setdefault(str(seg.node_rank), miner)
        if bound != miner:
            return _no(Rejection.UNKNOWN_MINER)
        digest = segments.digest(seg)
        key = f"{miner}/{seg.index}"
        old = t["segments"].get(key)
        if old is not None:
            if old["digest"] == digest:
                return {"ok": True, "digest": digest, "duplicate": True}
            _reject(t, payee, seg.index, Rejection.CONFLICTING_SEGMENT.name)
            return _no(Rejection.CONFLICTING_SEGMENT)
        audited = t.get("audited", [])
        if len(audited) >= self.v.quorum:
            # 2f+1 finished their private audits: this one would be paid with nobody's draw.
            # Honest trainers are done: correct replicas say "audited" once every final is in.
            return _no(Rejection.TASK_CLOSED)
        broken = specs.chain_break(t, miner, seg)
        if broken is not None:
            _reject(t, payee, seg.index, Rejection.BROKEN_CHAIN.name)
            return {**_no(Rejection.BROKEN_CHAIN), "detail": broken}
        # Public: segment 0, finals, and any segment after an "audited" (that replica will not
        # draw for it and f faulty ones may complete the quorum at once; a late honest one is
        # replayed by all and still paid). The rest only by private draws.
        sampled = seg.final or seg.index == 0 or bool(audited)
        t["segments"][key] = {
            "digest": digest,
            "miner": payee,
            "index": seg.index,
            "rank": seg.node_rank,
            "startCid": seg.start_cid,
            "endCid": seg.end_cid,
            "endStep": seg.end_step,
            "samples": seg.steps * t["info"]["batchSize"] * seg.world.nproc_per_node,
            "final": seg.final,
            "metrics": dict(seg.metrics),
            "sampled": sampled,
            "verdicts": {},
            "decided": None if sampled else True,
            "reason": None,
            "json": doc["segment"],  # kept for private audits until the allocation
        }
        self._maybe_allocate(seg.task)
        return {"ok": True, "digest": digest, "sampled": sampled}

    def _verdict(self, doc: dict[str, Any]) -> dict[str, Any]:
        t = self.tasks.get(doc["task"])
        if t is None:
            return _no(Rejection.UNKNOWN_TASK)
        if t["allocation"] is not None:
            return _no(Rejection.TASK_CLOSED)  # (and its segment records are gone: ``closing``)
        rec = t["segments"].get(f"{doc['miner'].lower()}/{doc['index']}")
        if rec is None or rec["digest"] != doc["segment"]:
            return _no(Rejection.NOT_ASSIGNED)
        if not rec["sampled"] and doc["valid"] is not False:
            return _no(Rejection.NOT_ASSIGNED)  # a passed private audit is not ordered
        replica = doc["replica"]
        if type(replica) is not int or not 0 <= replica < len(self.v.addresses):
            return _no(Rejection.BAD_VERDICT)
        msg = verdict_message(
            task=doc["task"],
            miner=rec["miner"],
            index=rec["index"],
            digest=rec["digest"],
            valid=bool(doc["valid"]),
            reason=str(doc["reason"]),
        )
        try:
            signer = signing.recover(
                doc["signature"], VERDICT_DOMAIN, VERDICT_TYPES, "Verdict", msg
            )
        except errors.ProtocolError:
            return _no(Rejection.BAD_VERDICT)
        if signer.lower() != self.v.addresses[replica].lower():
            return _no(Rejection.BAD_VERDICT)
        if not rec["sampled"]:
            # A challenge: this replica's private replay failed. The segment turns
            # public; every replica replays it and the first 2f+1 verdicts decide.
            rec["sampled"], rec["decided"], rec["challenged"] = True, None, replica
        if str(replica) in rec["verdicts"] or rec["decided"] is not None:
            return {"ok": True, "duplicate": True}
        rec["verdicts"][str(replica)] = [bool(doc["valid"]), str(doc["reason"])]
        votes = Counter(v[0] for v in rec["verdicts"].values())
        if len(rec["verdicts"]) >= self.v.quorum:
            # The first 2f+1 verdicts decide: valid iff at least f+1 of them say
            # so. At least f+1 of any 2f+1 come from correct replicas, so when
            # correct replicas agree (deterministic replay) their answer wins
            # whatever the f faulty ones vote and whichever 2f+1 the primary
            # orders first; and a segment whose honest replays straddle the
            # threshold still decides, instead of waiting forever for 2f+1
            # matching votes that will never come.
            rec["decided"] = votes[True] >= self.v.f + 1
        if rec["decided"] is False:
            reasons = Counter(v[1] for v in rec["verdicts"].values() if not v[0])
            rec["reason"] = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
            _reject(t, rec["miner"], rec["index"], rec["reason"])
        if rec["decided"] is True and rec["index"] == 0 and t.get("initialCid") is None:
            t["initialCid"] = rec["startCid"]  # replayed from the seed's checkpoint (>= f+1)
        if rec["decided"] is not None:
            rec["json"] = None  # the decided segment's body is no longer needed in the state
            self._maybe_allocate(doc["task"])
        return {"ok": True, "decided": rec["decided"]}

    def _allocsig(self, doc: dict[str, Any]) -> dict[str, Any]:
        t = self.tasks.get(doc["task"])
        if t is None or t["allocation"] is None or doc["round"] != 0:
            return _no(Rejection.UNKNOWN_TASK)
        replica = doc["replica"]
        if type(replica) is not int or not 0 <= replica < len(self.v.addresses):
            return _no(Rejection.BAD_VERDICT)
        alloc = self.allocation(doc["task"])
        assert alloc is not None
        try:
            signer = allocations.recover(doc["signature"], alloc, self.v.chain_id, self.v.contract)
        except errors.ProtocolError:
            return _no(Rejection.BAD_VERDICT)
        if signer.lower() != self.v.addresses[replica].lower():
            return _no(Rejection.BAD_VERDICT)
        t["signatures"].setdefault(str(replica), {"signer": signer, "signature": doc["signature"]})
        return {"ok": True}

    def _audited(self, doc: dict[str, Any]) -> dict[str, Any]:
        t = self.tasks.get(doc["task"])
        if t is None:
            return _no(Rejection.UNKNOWN_TASK)
        replica = doc["replica"]
        if type(replica) is not int or not 0 <= replica < len(self.v.addresses):
            return _no(Rejection.BAD_VERDICT)
        try:
            signer = signing.recover(
                doc["signature"], VERDICT_DOMAIN, AUDITED_TYPES, "Audited", {"task": doc["task"]}
            )
        except errors.ProtocolError:
            return _no(Rejection.BAD_VERDICT)
        if signer.lower() != self.v.addresses[replica].lower():
            return _no(Rejection.BAD_VERDICT)
        if not self.finals_in(doc["task"]):
            # A correct replica says it only once every final is in (``awaiting_audited``; the
            # state only grows). An earlier one would make every later segment public.
            return _no(Rejection.NOT_READY)
        audited = t.setdefault("audited", [])
        if replica not in audited:
            audited.append(replica)
            self._maybe_allocate(doc["task"])
        return {"ok": True}

    def finals_in(self, task: str) -> bool:
        """Every node of ``task`` has sent its final segment."""
        t = self.tasks[task]
        finals = {s["rank"] for s in t["segments"].values() if s["final"]}
        return len(finals) >= t["info"]["nodes"]

    def _maybe_allocate(self, task: str) -> None:
        t = self.tasks[task]
        info = t["info"]
        # (miner, index) order, never the dict's: ``restore`` (sorted-key JSON) inserts in
        # another order, and a restored replica must sign the same allocation.
        segs = sorted(t["segments"].values(), key=lambda s: (s["miner"].lower(), s["index"]))
        if (
            t["allocation"] is not None
            or not self.finals_in(task)
            or len(t.get("audited", [])) < self.v.quorum
            or any(s["decided"] is None for s in segs)
        ):
            return
        chained = rewards.chained((s["miner"].lower(), s["index"]) for s in segs)
        miners: dict[str, rewards.MinerWork] = {}
        for s in segs:
            payee = to_checksum_address(s["miner"])  # already is, unless from an older state
            w = miners.get(payee, rewards.MinerWork(stake=info["minerStake"], samples=0))
            # Rejected because the validators' own audits failed (their commonest
            # reason): unverified, so unpaid, but not the miner's fault: no slash.
            ours = s["decided"] is False and s.get("reason") == AUDIT_ERROR
            rejected = w.rejected or (s["decided"] is False and not ours)
            paid = s["decided"] and (s["miner"].lower(), s["index"]) in chained
            samples = w.samples + (s["samples"] if paid else 0)
            miners[payee] = rewards.MinerWork(
                stake=info["minerStake"], samples=samples, rejected=rejected
            )
        met = True
        target = info.get("target")
        if target is not None:
            # Only a chain from the seed's checkpoint to the final segment vouches for its
            # metrics, and only a final the auditors decided valid (a rejected one's metrics
            # are its miner's claim). Of several, the lowest rank's last one: an order every
            # replica sees alike, whatever order the finals were committed in.
            vouched = [
                s
                for s in segs
                if s["final"]
                and s["decided"] is True
                and (s["miner"].lower(), s["index"]) in chained
            ]
            final = min(vouched, key=lambda s: (s["rank"], -s["index"])) if vouched else None
            met = rewards.meets(
                None if final is None else final["metrics"].get(target["name"]), target
            )
        vals = dict(zip(self.v.addresses, self.v.stakes, strict=True))
        a = rewards.allocate(
            pool=info["pool"],
            fee_bps=info["feeBps"],
            miners=miners,
            validators=vals,
            target_met=met,
        )
        t["allocation"] = {
            "payees": list(a.payees),
            "amounts": [str(x) for x in a.amounts],
            "slashed": list(a.slashed),
            "slashAmounts": [str(x) for x in a.slash_amounts],
            "targetMet": a.target_met,
            "token": info.get("token", allocations.NATIVE),
        }
        closing.close(t)  # no audit, chain or reward needs a segment record again

    # ------------------------------------------------------------ queries

    def allocation(self, task: str) -> allocations.Allocation | None:
        t = self.tasks.get(task)
        if t is None or t["allocation"] is None:
            return None
        a = t["allocation"]
        return allocations.Allocation(
            task=task,
            round=0,
            payees=tuple(a["payees"]),
            amounts=tuple(int(x) for x in a["amounts"]),
            slashed=tuple(a["slashed"]),
            slash_amounts=tuple(int(x) for x in a["slashAmounts"]),
            target_met=a["targetMet"],
            token=a.get("token", allocations.NATIVE),
        )

    def pending_audits(self, replica: int) -> list[tuple[str, dict[str, Any]]]:
        """Sampled, undecided segments this replica has not voted on: (task, segment JSON)."""
        out = []
        for task, t in self.tasks.items():
            for rec in t["segments"].values():
                if rec["decided"] is None and str(replica) not in rec["verdicts"] and rec["json"]:
                    out.append((task, rec["json"]))
        return out

    def private_candidates(self) -> list[tuple[str, str, int, dict[str, Any]]]:
        """Segments open to private audits: (task, digest, task's rate, segment JSON).
        The replica keeps those its own ``audit_coin`` draws below the rate."""
        out = []
        for task, t in self.tasks.items():
            if t["allocation"] is not None:
                continue
            for rec in t["segments"].values():
                if not rec["sampled"] and rec["json"]:
                    out.append((task, rec["digest"], t["info"]["rate"], rec["json"]))
        return out

    def awaiting_audited(self, replica: int) -> list[str]:
        """Tasks whose finals are all in and that still wait for this replica's ``audited``."""
        return [
            k
            for k, t in self.tasks.items()
            if t["allocation"] is None and replica not in t.get("audited", []) and self.finals_in(k)
        ]

    def unsigned_allocations(self, replica: int) -> list[str]:
        return [
            k
            for k, t in self.tasks.items()
            if t["allocation"] is not None and str(replica) not in t["signatures"]
        ]

    def view(self, task: str) -> dict[str, Any] | None:
        """GET /v1/tasks/{ns}/{name} (docs/protocol.md)."""
        t = self.tasks.get(task)
        if t is None:
            return None
        done = closing.summary(t)
        if t["allocation"] is not None:
            phase = "Allocated"
        elif self.finals_in(task):
            phase = "Verifying"
        elif t["segments"]:
            phase = "Training"
        else:
            phase = "Registered"
        return {
            "id": task,
            "registered": True,
            "phase": phase,
            "progress": done["progress"],
            "miners": done["miners"],
            "rejections": list(t["rejections"]),
            "allocation": self.allocation_json(task, with_signatures=False),
        }

    def allocation_json(self, task: str, *, with_signatures: bool = True) -> dict[str, Any] | None:
        alloc = self.allocation(task)
        if alloc is None:
            return None
        doc = allocations.to_json(
            alloc, chain_id=self.v.chain_id, contract=self.v.contract, quorum=self.v.quorum
        )
        sigs = self.tasks[task]["signatures"].values()
        if with_signatures:
            doc["signatures"] = sorted(sigs, key=lambda s: int(s["signer"], 16))
        else:
            del doc["signatures"]
        return doc

    # ------------------------------------------------------------ snapshots

    def snapshot(self) -> bytes:
        return canonical(self.tasks)

    def restore(self, data: bytes) -> None:
        tasks_ = json.loads(data) if data else {}
        if not isinstance(tasks_, dict):
            raise ValueError("snapshot is not an object")
        self.tasks = tasks_


def _no(reason: Rejection) -> dict[str, Any]:
    return {"ok": False, "reason": reason.name}


_MALFORMED = canonical(_no(Rejection.MALFORMED))


MAX_REJECTIONS = 256
"""Entries a task's ``rejections`` keeps (for the view; decisions live in the segment records),
so repeated refusals cannot grow the state without bound."""


def _reject(t: dict[str, Any], miner: str, index: int, reason: str) -> None:
    """List a refusal in the task's view, once, and only the first ``MAX_REJECTIONS``."""
    entry = {"miner": miner, "index": index, "reason": reason}
    if len(t["rejections"]) < MAX_REJECTIONS and entry not in t["rejections"]:
        t["rejections"].append(entry)
