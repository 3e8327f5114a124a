"""The TrainingTask state machine: ``decide(world) -> Plan``, pure.

Pending -> Scheduling -> Training -> Verifying -> Settling -> Succeeded, and
Failed from anywhere. The shell (``tasks``) gathers a ``World`` from its
watches and the validators' API, calls ``decide`` and applies the ``Plan``:
the status first (guarded by resourceVersion, so a stale view never acts),
then the child writes, every one idempotent (deterministic names; 409 and 404
are success). Any crash between two writes is therefore repaired by the next
reconcile, which recomputes the plan from what exists.

The phase is honest (Kubeflow #1617): a task is Training only when every pod
of its gang is bound and running; while gated it is Scheduling with a reason
(``InsufficientCapacity`` naming the numbers). A failed or vanished member
restarts the whole gang (#1579, #2000), counted against
``runPolicy.backoffLimit``; the trainers resume from their last committed
checkpoint (their state volume survives, docs/protocol.md). A member whose
node is lost (NotReady or deleted) counts as failed, and its pod is force-
deleted: no kubelet is left to confirm a graceful delete. Every phase or
reason change emits one Event (#1711).

Everything a decision depends on is in the World or in the task's status,
never in the operator's memory: the gang timeout counts from the
``lastTransitionTime`` of ``GangScheduled=Unknown`` (set at the release), so
an operator restarted by a Helm upgrade still takes a stuck gang down.
"""

from __future__ import annotations

import copy
import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pot.operator import checks, conditions, gang, names, podstates
from pot.operator.conditions import timestamp

Body = Mapping[str, Any]

PENDING, SCHEDULING, TRAINING = "Pending", "Scheduling", "Training"
VERIFYING, SETTLING, SUCCEEDED, FAILED = "Verifying", "Settling", "Succeeded", "Failed"
TERMINAL = (SUCCEEDED, FAILED)
DEFAULT_BACKOFF_LIMIT = 3
WAITING = "; waiting for the scheduler"
_COUNTERS = ("step", "segmentsCommitted", "segmentsVerified", "segmentsRejected")


@dataclass(frozen=True, slots=True)
class PodView:
    """One trainer pod as the state machine sees it."""

    name: str
    rank: int
    attempt: int
    uid: str = ""
    phase: str = "Pending"
    gated: bool = True
    node: str | None = None
    deleting: bool = False
    message: str = ""
    node_lost: bool = False
    """Bound to a node that is NotReady or gone: its kubelet cannot confirm anything."""


@dataclass(frozen=True, slots=True)
class Registration:
    """Outcome of ``POST /v1/tasks``: ok, rejected (the spec is bad) or unavailable (retry)."""

    outcome: Literal["ok", "rejected", "unavailable"]
    message: str = ""


@dataclass(frozen=True, slots=True)
class Event:
    """A Kubernetes Event to post about the task."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(kw_only=True, slots=True)
class World:
    """Everything ``decide`` may look at."""

    task: Body
    now: datetime.datetime
    vset: checks.VsetView | None = None
    miner_keys: frozenset[str] | None = None
    nodes: Sequence[gang.NodeInfo] = ()
    used: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, Any]] = ()
    queued: bool = False
    pods: Sequence[PodView] = ()
    registration: Registration | None = None
    stakes: checks.StakeCheck | None = None
    """The miners' stakes, read from the chain at admission (None: not checked)."""
    progress: Mapping[str, Any] | None = None
    pending: Sequence[gang.Claim] = ()
    """Released pods of *other* gangs not bound yet (and creates in flight): room promised."""
    create_rejected: str = ""
    """The API server refused to create this gang's pods for their spec (422 and the like)."""
    grace: float = 30.0
    gang_timeout: float = 120.0
    poll: float = 5.0


@dataclass(kw_only=True, slots=True)
class Plan:
    """What the shell must do, in order: status, register, children, deletes, creates, releases."""

    status: dict[str, Any]
    status_changed: bool = False
    register: bool = False
    ensure_children: bool = False
    create_ranks: list[int] = field(default_factory=list)
    attempt: int = 0
    release: list[str] = field(default_factory=list)
    create_released: bool = False
    """Create the pods of ``create_ranks`` without the gang gate: the whole gang's
    fit was counted first (saves a release patch per pod)."""
    delete: list[PodView] = field(default_factory=list)
    force_delete: list[PodView] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    requeue: float | None = None


def pod_view(pod: Body, nodes: Mapping[str, gang.NodeInfo] | None = None) -> PodView | None:
    """Parse a trainer pod; None for pods without the operator's labels.

    With ``nodes`` (the watched Nodes by name) a pod bound to a node that is
    missing or not Ready is marked ``node_lost``.
    """
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    labels = meta.get("labels") or {}
    try:
        rank, attempt = int(labels[names.LABEL_RANK]), int(labels[names.LABEL_ATTEMPT])
    except (KeyError, ValueError):
        return None
    phase = status.get("phase") or "Pending"
    message = podstates.message(status, phase)
    node = spec.get("nodeName") or None
    info = nodes.get(node) if nodes is not None and node else None
    lost = nodes is not None and node is not None and (info is None or not info.ready)
    if lost and phase not in TERMINAL:
        message = f"its node {node} is {'NotReady' if info else 'gone'}"
    return PodView(
        name=meta.get("name", ""),
        rank=rank,
        attempt=attempt,
        uid=meta.get("uid", ""),
        phase=phase,
        gated=bool(spec.get("schedulingGates")),
        node=node,
        deleting=bool(meta.get("deletionTimestamp")),
        message=message,
        node_lost=lost,
    )


class _Machine:
    """One decision: mutable scratch state around the immutable inputs."""

    def __init__(self, world: World) -> None:
        self.w = world
        task = world.task
        self.meta, self.spec = task["metadata"], task.get("spec") or {}
        self.gen = int(self.meta.get("generation") or 1)
        self.old = dict(task.get("status") or {})
        self.old.pop("kopf", None)
        self.status = copy.deepcopy(self.old)
        self.plan = Plan(status=self.status)
        self.nodes = int((self.spec.get("resources") or {}).get("nodes", 1) or 1)
        self.restarts = int(self.status.get("restarts") or 0)
        self.plan.attempt = self.restarts

    # -- status helpers ---------------------------------------------------------
    def cond(self, ctype: str, status: conditions.Status, reason: str, message: str) -> None:
        self.status["conditions"] = conditions.put(
            self.status.get("conditions"),
            ctype,
            status,
            reason,
            message,
            generation=self.gen,
            now=self.w.now,
        )

    def phase(self, phase: str, reason: str, message: str, *, warn: bool = False) -> None:
        if (self.old.get("phase"), self.old.get("reason")) != (phase, reason):
            self.plan.events.append(Event("Warning" if warn else "Normal", reason, message))
        self.status.update(phase=phase, reason=reason, message=message)

    def fail(self, reason: str, message: str) -> Plan:
        self.phase(FAILED, reason, message, warn=True)
        self.cond(conditions.FAILED, "True", reason, message)
        for ctype in (conditions.TRAINING, conditions.GANG_SCHEDULED):
            if conditions.find(self.status.get("conditions"), ctype):
                self.cond(ctype, "False", reason, message)
        self.status.setdefault("completionTime", timestamp(self.w.now))
        # Kubeflow #1579: no member of a failed gang keeps running.
        self.take_down(p for p in self.w.pods if p.phase not in TERMINAL)
        return self.finish()

    def take_down(self, pods: Iterable[PodView]) -> None:
        """Delete ``pods``; those on a lost node by force, as the pod GC would: no
        kubelet is left to confirm a graceful delete, so it would stay Terminating
        forever and block the gang's names. The node is unreachable, so the old
        process cannot rejoin the gang."""
        pods = list(pods)
        self.plan.delete = [p for p in pods if not p.deleting and not p.node_lost]
        self.plan.force_delete = [p for p in pods if p.node_lost]

    def finish(self, requeue: float | None = None) -> Plan:
        self.status["observedGeneration"] = self.gen
        self.plan.status_changed = self.status != self.old
        self.plan.requeue = requeue
        return self.plan

    # -- the machine ---------------------------------------------------------------
    def decide(self) -> Plan:
        old_phase = self.old.get("phase") or ""
        if old_phase in TERMINAL:
            return self.finished(old_phase)
        problems = checks.spec_problems(self.w.task)
        if problems:
            return self.fail(checks.INVALID_SPEC, "; ".join(p.message for p in problems))
        if self.w.create_rejected:
            return self.fail(checks.INVALID_SPEC, self.w.create_rejected)
        # Like a Job's, the deadline bounds the run, not the payout: once the gang
        # has finished training, verification and settlement are the validators'
        # and the chain's, and failing the task then would contradict the contract.
        if old_phase in ("", PENDING, SCHEDULING, TRAINING) and not self.trained():
            deadline = self.deadline_passed()
            if deadline:
                return self.fail("DeadlineExceeded", deadline)
        if old_phase in (SCHEDULING, TRAINING, VERIFYING, SETTLING) and self.w.vset is None:
            gone = checks.vset_gone(self.w.task, trained=old_phase in (VERIFYING, SETTLING))
            if gone.permanent:
                return self.fail(gone.reason, gone.message)
            self.phase(old_phase, gone.reason, gone.message, warn=True)
            return self.finish(requeue=self.w.poll)
        if old_phase in ("", PENDING):
            plan = self.pending()
            if plan is not None:
                return plan
        if self.status.get("phase") in (VERIFYING, SETTLING):
            return self.verifying()
        return self.gang()

    def finished(self, phase: str) -> Plan:
        pods = list(self.w.pods)
        if phase == FAILED:
            self.take_down(p for p in pods if p.phase not in TERMINAL)
        ttl = (self.spec.get("runPolicy") or {}).get("ttlSecondsAfterFinished")
        done = conditions.parse_time(self.status.get("completionTime"))
        if ttl is not None and done is not None and any(not p.deleting for p in pods):
            left = (done - self.w.now).total_seconds() + float(ttl)
            if left <= 0:
                self.take_down(pods)
            else:
                return self.finish(requeue=left)
        return self.finish()

    def trained(self) -> bool:
        """Every rank of the current attempt completed: training is over."""
        done = {
            p.rank
            for p in self.w.pods
            if p.attempt == self.restarts and not p.deleting and p.phase == "Succeeded"
        }
        return len(done) >= self.nodes

    def released_for(self) -> float:
        """Seconds since the gang's gates came off (0 unless it waits for the scheduler).

        Read from the status, not from memory: ``GangScheduled`` turns Unknown
        at the release, and its lastTransitionTime survives an operator restart.
        """
        cond = conditions.find(self.status.get("conditions"), conditions.GANG_SCHEDULED)
        if not cond or cond.get("status") != "Unknown":
            return 0.0
        since = conditions.parse_time(cond.get("lastTransitionTime"))
        return max((self.w.now - since).total_seconds(), 0.0) if since else 0.0

    def released(self, msg: str) -> None:
        """Record a release (or confirm one): GangScheduled Unknown until every pod is bound."""
        self.phase(SCHEDULING, "Released", msg)
        self.cond(conditions.GANG_SCHEDULED, "Unknown", "Released", msg + WAITING)

    def deadline_passed(self) -> str:
        # Until training starts, from the creation (as a Job's, from its first sync):
        # a gang that never runs (an image not pulled, validators down) still ends.
        limit = (self.spec.get("runPolicy") or {}).get("activeDeadlineSeconds")
        since = self.status.get("startTime") or self.meta.get("creationTimestamp")
        start = conditions.parse_time(since)
        if limit is None or start is None:
            return ""
        if (self.w.now - start).total_seconds() > float(limit):
            what = "started" if self.status.get("startTime") else "created"
            return f"ran longer than runPolicy.activeDeadlineSeconds={limit} ({what} {since})"
        return ""

    def grace_over(self) -> bool:
        created = conditions.parse_time(self.meta.get("creationTimestamp"))
        return created is None or (self.w.now - created).total_seconds() >= self.w.grace

    def pending(self) -> Plan | None:
        """Checks and registration; None once the gang may be created."""
        stakes = self.w.stakes or checks.StakeCheck()
        for problem in (
            checks.vset_problem(self.w.task, self.w.vset, grace_over=self.grace_over()),
            checks.keys_problem(self.w.task, self.w.miner_keys, grace_over=self.grace_over()),
            stakes.problem,
        ):
            if problem is None:
                continue
            if problem.permanent:
                return self.fail(problem.reason, problem.message)
            self.phase(PENDING, problem.reason, problem.message, warn=problem is stakes.problem)
            if problem is stakes.problem:
                self.cond(conditions.MINERS_STAKED, "False", problem.reason, problem.message)
            return self.finish(requeue=problem.retry or min(self.w.poll, 2.0))
        fit = self.fit()
        if not self.w.queued and not fit.fits_ever:
            return self.fail(checks.UNSCHEDULABLE, fit.message)
        if not conditions.is_true(self.status.get("conditions"), conditions.REGISTERED):
            reg = self.w.registration
            if reg is None:
                self.plan.register = True
                return self.finish()
            if reg.outcome == "rejected":
                return self.fail(
                    "ValidatorsRejected", f"the validators refused the task: {reg.message}"
                )
            if reg.outcome == "unavailable":
                self.phase(
                    PENDING,
                    "ValidatorsUnavailable",
                    f"cannot register with the validators: {reg.message}",
                )
                return self.finish(requeue=self.w.poll)
            vset = self.spec["validatorSetRef"]["name"]
            self.cond(
                conditions.REGISTERED,
                "True",
                "Registered",
                f'registered with ValidatorSet "{vset}"',
            )
            if stakes.verified:
                self.cond(conditions.MINERS_STAKED, "True", checks.STAKES_VERIFIED, stakes.verified)
            lock = stakes.lock
            if lock is not None:
                ok = lock.reason == checks.LOCK_COVERS
                self.cond(
                    conditions.STAKE_LOCKED, "True" if ok else "False", lock.reason, lock.message
                )
                if not ok:
                    self.plan.events.append(Event("Warning", lock.reason, lock.message))
        return None

    def fit(self) -> gang.Fit:
        return gang.fit(
            gang.demand_of(self.spec),
            self.nodes,
            self.w.nodes,
            self.w.used,
            selector=self.w.selector,
            tolerations=self.w.tolerations,
            pending=self.w.pending,
        )

    def gang(self) -> Plan:
        current = [p for p in self.w.pods if p.attempt == self.restarts]
        stale = [p for p in self.w.pods if p.attempt != self.restarts]
        live = [p for p in current if not p.deleting]
        if stale or len(live) < len(current):
            # An old attempt (or a pod being taken down) still holds the names:
            # wait until it is gone before creating the next attempt. A pod on a
            # lost node would never go (take_down forces it).
            self.take_down(p for p in self.w.pods if p.attempt != self.restarts or p.deleting)
            if self.status.get("phase") in ("", PENDING):
                self.phase(SCHEDULING, "Creating", f"creating a gang of {self.nodes} pods")
            return self.finish(requeue=1.0)
        by_rank = {p.rank: p for p in live}
        missing = [r for r in range(self.nodes) if r not in by_rank]
        released = any(not p.gated for p in live) or self.old.get("phase") == TRAINING
        # A member on a lost node is as good as failed: the survivors would
        # hang in their next collective (Kubeflow #2000).
        failed = [
            p for p in live if p.phase == "Failed" or (p.node_lost and p.phase != "Succeeded")
        ]
        if released and (failed or (missing and self.old.get("phase") == TRAINING)):
            return self.restart(failed, missing)
        if missing:
            self.plan.ensure_children = True
            self.plan.create_ranks = missing
            if released:
                # Released, never trained, ranks missing: a crash between the
                # creates of a gang created ungated, or an eviction before it
                # ran. Complete it rather than restart it: the members wait in
                # rendezvous, and if the missing ones cannot be placed the gang
                # timeout below takes the gang down and regates it.
                self.plan.create_released = True
                self.released(f"all {self.nodes} pods released together")
                return self.finish(requeue=1.0)
            if len(missing) == self.nodes and not self.w.queued:
                # A fresh gang: count it now. One that fits is created ungated
                # (the count is the release); one that does not is created
                # gated and released by admit() once it fits.
                fit = self.fit()
                if not fit.fits_ever:
                    return self.fail(checks.UNSCHEDULABLE, fit.message)
                if fit.fits_now:
                    self.plan.create_released = True
                    self.released(f"all {self.nodes} pods released together")
                    return self.finish(requeue=1.0)
                self.phase(SCHEDULING, checks.INSUFFICIENT, fit.message)
                self.cond(conditions.GANG_SCHEDULED, "False", checks.INSUFFICIENT, fit.message)
                return self.finish(requeue=self.w.poll)
            if self.status.get("phase") != SCHEDULING or self.status.get("reason") not in (
                "Creating",
                "GangRestarting",
            ):
                self.phase(SCHEDULING, "Creating", f"creating a gang of {self.nodes} pods")
            self.cond(conditions.GANG_SCHEDULED, "False", "Creating", "creating the gang's pods")
            return self.finish(requeue=self.w.poll)
        gated = [p for p in live if p.gated]
        if gated and len(gated) == len(live):
            return self.admit(live)
        if gated:
            # A crash between two releases: finish the release (all-or-nothing).
            self.plan.release = [p.name for p in gated]
            return self.finish(requeue=1.0)
        if all(p.phase == "Succeeded" for p in live):
            self.cond(conditions.TRAINING, "False", "Completed", f"all {self.nodes} pods completed")
            self.phase(
                VERIFYING,
                "TrainingComplete",
                "training finished; waiting for the validators' verdicts",
            )
            return self.verifying()
        unbound = [p for p in live if not p.node]
        if unbound and self.w.queued:
            # Kueue/Volcano admit and bind the gang as one; our gang timeout is theirs.
            self.phase(
                SCHEDULING,
                "Queued",
                f"waiting for the task's queue (Kueue or Volcano) to admit all {self.nodes} pods",
            )
            return self.finish(requeue=self.w.poll)
        if unbound:
            # The same condition as at release: no status write while nothing
            # changed (a status without it, say an older operator's, starts the
            # gang timeout now).
            msg = f"all {self.nodes} pods released together"
            self.cond(conditions.GANG_SCHEDULED, "Unknown", "Released", msg + WAITING)
            if self.released_for() > self.w.gang_timeout:
                why = unbound[0].message or "not scheduled"
                msg = (
                    f"released gang not placed within {self.w.gang_timeout:.0f}s "
                    f"({unbound[0].name}: {why}); taking it down to regate"
                )
                self.phase(SCHEDULING, checks.INSUFFICIENT, msg, warn=True)
                self.cond(conditions.GANG_SCHEDULED, "False", checks.INSUFFICIENT, msg)
                self.take_down(live)
                return self.finish(requeue=1.0)
            self.phase(SCHEDULING, "Released", msg)
            return self.finish(requeue=min(self.w.poll, 2.0))
        running = [p for p in live if p.phase in ("Running", "Succeeded")]
        if len(running) < len(live):
            slow = [p for p in live if p.phase not in ("Running", "Succeeded") and p.message]
            self.phase(
                SCHEDULING,
                "Starting",
                f"all {self.nodes} pods bound; waiting for their containers"
                + (f" ({slow[0].name}: {slow[0].message})" if slow else ""),
            )
            self.cond(
                conditions.GANG_SCHEDULED,
                "True",
                "Scheduled",
                f"all {self.nodes} pods bound to nodes",
            )
            return self.finish(requeue=self.w.poll)
        self.cond(
            conditions.GANG_SCHEDULED, "True", "Scheduled", f"all {self.nodes} pods bound to nodes"
        )
        self.cond(conditions.TRAINING, "True", "GangRunning", f"all {self.nodes} pods running")
        self.status.setdefault("startTime", timestamp(self.w.now))
        self.phase(TRAINING, "GangRunning", f"all {self.nodes} pods running")
        self.mirror_progress()
        return self.finish(requeue=self.w.poll)

    def admit(self, live: list[PodView]) -> Plan:
        """Every pod exists and is gated: release them together, or explain why not."""
        if self.w.queued:
            return self.finish(requeue=self.w.poll)
        fit = self.fit()
        if not fit.fits_ever:
            return self.fail(checks.UNSCHEDULABLE, fit.message)
        if not fit.fits_now:
            self.phase(SCHEDULING, checks.INSUFFICIENT, fit.message)
            self.cond(conditions.GANG_SCHEDULED, "False", checks.INSUFFICIENT, fit.message)
            return self.finish(requeue=self.w.poll)
        self.plan.release = [p.name for p in sorted(live, key=lambda p: p.rank)]
        self.released(f"all {self.nodes} pods released together")
        return self.finish(requeue=1.0)

    def restart(self, failed: list[PodView], missing: list[int]) -> Plan:
        whys = [f"{p.name}: {p.message or 'failed'}" for p in failed]
        whys += [
            f"{names.trainer_pod(self.meta['name'], r)}: gone (deleted or evicted)" for r in missing
        ]
        why = "; ".join(whys)
        limit = int((self.spec.get("runPolicy") or {}).get("backoffLimit", DEFAULT_BACKOFF_LIMIT))
        if self.restarts + 1 > limit:
            return self.fail(
                "BackoffLimitExceeded",
                f"gang failed {self.restarts + 1} times, more than runPolicy.backoffLimit={limit}; last: {why}",
            )
        self.status["restarts"] = self.restarts + 1
        self.plan.attempt = self.restarts + 1
        msg = f"gang restart {self.restarts + 1}/{limit} from the last committed checkpoint: {why}"
        self.phase(SCHEDULING, "GangRestarting", msg, warn=True)
        self.cond(conditions.TRAINING, "False", "GangRestarting", msg)
        self.cond(conditions.GANG_SCHEDULED, "False", "GangRestarting", msg)
        self.take_down(self.w.pods)
        return self.finish(requeue=1.0)

    def mirror_progress(self) -> None:
        prog = self.w.progress
        total = int((self.spec.get("hyperparameters") or {}).get("steps", 0) or 0)
        if not prog:
            # The same shape as a mirrored answer: the first answer that says
            # nothing new ("0 of N, no segments yet") then costs no status write.
            self.status.setdefault(
                "progress",
                {
                    "step": 0,
                    "totalSteps": total,
                    "text": f"0/{total}",
                    "segmentsCommitted": 0,
                    "segmentsVerified": 0,
                    "segmentsRejected": 0,
                },
            )
            return
        # Counters only grow: a replica that lags (catching up after a restart)
        # may answer, and must not move the status backwards.
        p, seen = prog.get("progress") or {}, self.status.get("progress") or {}
        got = {k: max(int(p.get(k, 0) or 0), int(seen.get(k, 0) or 0)) for k in _COUNTERS}
        total = int(p.get("totalSteps", total) or total)
        self.status["progress"] = {**got, "totalSteps": total, "text": f"{got['step']}/{total}"}

    def verifying(self) -> Plan:
        self.mirror_progress()
        prog = self.w.progress or {}
        receipt = prog.get("settlement")
        if receipt:
            self.status["settlement"] = dict(receipt)
            self.cond(
                conditions.SETTLED,
                "True",
                "Settled",
                f"settled in transaction {receipt.get('txHash', '?')}",
            )
            self.status.setdefault("completionTime", timestamp(self.w.now))
            self.phase(SUCCEEDED, "Settled", "reward paid out on chain")
            return self.finish()
        if prog.get("allocation"):
            self.cond(
                conditions.VERIFIED,
                "True",
                "Allocated",
                "the validators committed the reward allocation",
            )
            self.phase(
                SETTLING, "Allocated", "allocation committed; waiting for the settlement receipt"
            )
        return self.finish(requeue=self.w.poll)


def decide(world: World) -> Plan:
    """The next step for one TrainingTask."""
    return _Machine(world).decide()
