"""One injection's life, from its first record to its withdrawal, as one task.

    record (awaited by the creator) -> [PENDING_APPROVAL -> approved] -> arm (RDS, faults
      at 0 %) -> enable (RTDS keys, leased) -> ACTIVE -> deadline timer | abort | guard |
      activation failure -> withdraw (RTDS first: instant off; then RDS)
      -> COMPLETED | ABORTED | FAILED

Fail safe: the stop future exists from admission on, so a stop requested at any moment
(abort-all racing a create) ends it; the withdrawal never waits on the store (records go
out in the background, see `Journal`); and whatever kills the task, its `finally` takes
the fault out of every target's desired state and ends the lease. Only `close` (a
deliberate shutdown, for a restart to resume) leaves faults to the lease.

Every state change after admission, here and at a restart, goes through `Transitions`:
the state machine (`Injection.transition`), then the log, the watchers and the store.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import structlog

from faultplane.delivery.plane import Delivery
from faultplane.lifecycle.approval import ApprovalPolicy
from faultplane.lifecycle.journal import Journal
from faultplane.lifecycle.pattern import level_at, start_drivers, stop_drivers
from faultplane.model.injection import Evidence, Injection, State, Transition
from faultplane.render.faults import FaultAssignment
from faultplane.xds import types

log = structlog.get_logger("faultplane.scheduler")

# The lease on switched-on faults outlives the deadline by this much, so the timer, not
# the lease, ends a fault while the control server is up.
LEASE_GRACE_SECONDS = 0.5
SYSTEM = "faultplane"  # the principal of transitions nobody asked for (deadline, guard)
HELD = "hypothesis held"
REFUTED = "hypothesis refuted"
NEVER_TOOK_EFFECT = "inconclusive: the fault never took effect"
OPERATOR_ABORT = "inconclusive: aborted by an operator"

Publish = Callable[[Injection, Transition], None]


@dataclass(frozen=True)
class End:
    state: State
    reason: str
    evidence: tuple[Evidence, ...] = ()
    verdict: str = ""
    by: str = SYSTEM


class Transitions:
    """Where every state change after admission is made: in memory (through the state
    machine, `Injection.transition`), to the log and the watchers at once, and to the
    store in the background, so that no withdrawal waits on the store."""

    def __init__(self, journal: Journal, publish: Publish) -> None:
        self._journal = journal
        self._publish = publish

    async def first(self, injection: Injection) -> None:
        """The admitted injection's first state, on disk before anyone is told (raises
        what the store raised: the creator is refused)."""
        await self._journal.transition(injection, injection.transitions[0], injection.owner)
        self._publish(injection, injection.transitions[0])

    def make(
        self,
        injection: Injection,
        state: State,
        reason: str,
        evidence: tuple[Evidence, ...] = (),
        by: str = SYSTEM,
        verdict: str | None = None,
        switched_on_at: float | None = None,
    ) -> Transition:
        """`verdict`: set with an ending state; `switched_on_at`: see `Injection.transition`."""
        if verdict is not None:
            injection.verdict = verdict
        change = injection.transition(state, reason, evidence, switched_on_at)
        log.info("injection state changed", injection=injection.id, state=state.value,
                 reason=reason, sidecars=len(evidence))  # fmt: skip
        self._publish(injection, change)
        self._journal.record(injection, change, by)
        return change


class Lifecycle:
    """A live injection's futures and task; created, whole, at admission."""

    def __init__(
        self,
        injection: Injection,
        delivery: Delivery,
        journal: Journal,
        transitions: Transitions,
        approval: ApprovalPolicy,
        restored: bool = False,
        remaining: float | None = None,
    ) -> None:
        """`restored`: reloaded after a restart (already on disk: no first record);
        `remaining`: resumed ACTIVE, with this many seconds to its deadline."""
        self.injection = injection
        self._delivery = delivery
        self._journal = journal
        self._transitions = transitions
        self._approval_policy = approval
        self._restored = restored
        self._remaining = remaining
        loop = asyncio.get_running_loop()
        self.stop: asyncio.Future[End] = loop.create_future()
        self.approval: asyncio.Future[str] = loop.create_future()
        # Resolved once the first record is on disk (or failed: the creator sees why).
        self.recorded: asyncio.Future[None] = loop.create_future()
        self._closing = False
        self.task = asyncio.create_task(self._run(), name=f"lifecycle-{injection.id}")

    @property
    def never_admitted(self) -> bool:
        """Its first record failed: CreateInjection refused it, nobody saw it start."""
        recorded = self.recorded
        return recorded.done() and not recorded.cancelled() and recorded.exception() is not None

    @property
    def closing(self) -> bool:
        """Closed for a restart to resume (not ended): nothing is freed."""
        return self._closing

    def request_stop(self, end: End) -> None:
        """Its end: the first one requested stands."""
        if not self.stop.done():
            self.stop.set_result(end)

    def abort(self, reason: str, principal: str) -> None:
        self.request_stop(End(State.ABORTED, reason, verdict=OPERATOR_ABORT, by=principal))

    def refute(self, reason: str, breach_limit_at: float) -> None:
        """The steady-state guard's stop; when another end came first, that one stands
        and so does its story (no breach time is added to it)."""
        if self.stop.done():
            return
        self.injection.breach_limit_at = breach_limit_at
        self.request_stop(End(State.ABORTED, reason, verdict=REFUTED))

    def approve(self, principal: str) -> None:
        if not self.approval.done():
            self.approval.set_result(principal)

    def close(self) -> None:
        """Cancel without withdrawing: the lease ends the fault, a restart resumes it."""
        self._closing = True
        self.task.cancel()

    # -- the task ----------------------------------------------------------------------

    async def _run(self) -> None:
        injection = self.injection
        withdrawn = False
        try:
            if not self._restored and not await self._first_record():
                return
            try:
                end = await self._until_end()
            except Exception as exc:
                log.exception("lifecycle failed", injection=injection.id)
                end = End(State.FAILED, f"internal error in faultplane: {exc}",
                          verdict="inconclusive: faultplane failed")  # fmt: skip
            if injection.state is State.PENDING_APPROVAL and end.state is State.FAILED:
                end = replace(end, state=State.ABORTED)  # the only way out of approval
            injection.ending = (end.state, end.reason, end.verdict)
            if end.state is not State.COMPLETED:
                # A restart must finish this end, not resume the fault. Recorded alongside
                # the withdrawal, never before it. (A restart past a deadline completes the
                # injection anyway.)
                self._journal.save_later(injection)
            try:
                evidence = await self._withdraw()
            except Exception:
                log.exception("withdrawal failed; dropping the fault", injection=injection.id)
                self._delivery.drop(injection.id)
                evidence = ()
            withdrawn = True
            verdict = deadline_verdict(injection) if end.verdict == HELD else end.verdict
            self._transitions.make(
                injection, end.state, end.reason, end.evidence + evidence, end.by, verdict
            )
        finally:
            if not self.recorded.done():
                self.recorded.cancel()  # closed before its first record: nobody waits on
            if not withdrawn and not self._closing:
                # Died mid-way (an exception in the withdrawal itself): take the fault out
                # of every desired state without waiting for anyone.
                self._delivery.drop(injection.id)
            if not self._closing:
                self._delivery.release(injection.id)

    async def _first_record(self) -> bool:
        try:
            await self._transitions.first(self.injection)
        except Exception as exc:
            self._delivery.release(self.injection.id)
            self.recorded.set_exception(exc)
            return False
        self.recorded.set_result(None)
        return True

    async def _until_end(self) -> End:
        injection = self.injection
        if self.stop.done():  # stopped before it ever started (abort-all racing create)
            return self.stop.result()
        if injection.state is State.PENDING_APPROVAL:
            approved = await self._await_approval()
            if approved is not None:
                return approved
        if self._remaining is None:
            activation = asyncio.create_task(self._activate())
            try:
                await asyncio.wait({activation, self.stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not activation.done():  # stopped, or this task cancelled (close)
                    activation.cancel()
                    await asyncio.gather(activation, return_exceptions=True)
            if activation.cancelled():  # the stop came first
                return self.stop.result()
            if (failure := activation.result()) is not None:
                return failure
            assert injection.ends_at is not None
            remaining = injection.ends_at - time.time()
        else:
            remaining = self._remaining
        if self.stop.done():
            return self.stop.result()
        deadline = End(State.COMPLETED, "deadline reached", verdict=HELD)
        timer = asyncio.get_running_loop().call_later(
            max(0.0, remaining), self.request_stop, deadline
        )
        # One driver per part with a pattern; every part's stops with the one end.
        drivers = start_drivers(injection, self._delivery, self._transitions)
        try:
            return await self.stop
        finally:
            timer.cancel()
            await stop_drivers(drivers)  # before the withdrawal: none of their pushes follow

    async def _await_approval(self) -> End | None:
        """None once approved (now PENDING); else why it ended while waiting."""
        injection = self.injection
        policy = self._approval_policy
        # Counted from when it began to wait for approval: a queued one only then.
        entered = next(
            (t.at for t in reversed(injection.transitions)
             if t.to_state is State.PENDING_APPROVAL),
            injection.created_at,
        )  # fmt: skip
        timeout = policy.timeout_seconds - (time.time() - entered)
        done, _ = await asyncio.wait(
            {self.approval, self.stop},
            timeout=max(0.0, timeout),
            return_when=asyncio.FIRST_COMPLETED,
        )
        if self.stop in done:
            return self.stop.result()
        if self.approval not in done:
            return End(State.ABORTED, f"approval expired after {policy.timeout_seconds:g}s")
        approver = self.approval.result()
        injection.approved_by = approver
        reason = f"approved by {approver}, pushing to targets"
        self._transitions.make(injection, State.PENDING, reason, by=approver)
        return None

    async def _activate(self) -> End | None:
        """Arm, then enable, on every target of every part (one push per phase, each
        sidecar answering once for all its parts); None once ACTIVE, else why it failed.

        The deadline counts from the moment the keys are pushed, and the lease is taken
        for exactly that span (plus the grace): however late the ACKs come, the lease
        covers the whole run and never outlives `ends_at` by more than the grace.
        """
        injection = self.injection
        spec = injection.spec
        armed = [
            (nodes, key, FaultAssignment(key, part.fault, part.target.scope, False))
            for key, part, nodes in injection.parts()
        ]
        push = self._delivery.push_many
        arm = await push(armed, self._delivery.plane.arm_type)
        if failure := _failure(arm, "arming"):
            return failure
        switched_on_at = time.time()
        lease_until = time.monotonic() + spec.duration_seconds + LEASE_GRACE_SECONDS
        self._delivery.lease(injection.id, lease_until)
        duration = spec.duration_seconds
        enabled = [
            (n, key, replace(f, enabled=True, level=level_at(f.fault, 0.0, duration)))
            for n, key, f in armed
        ]
        enable = await push(enabled, types.RUNTIME)
        if failure := _failure(enable, "switching on", arm):
            return failure
        self._transitions.make(
            injection,
            State.ACTIVE,
            "every target acknowledged the fault",
            arm + enable,
            switched_on_at=switched_on_at,
        )
        return None

    async def _withdraw(self) -> tuple[Evidence, ...]:
        """RTDS first (the fault stops at once), then the armed config goes away (routes in
        full-mesh mode, ECDS slots in overlay mode); every part, wherever it still is."""
        carries = self._delivery.carries
        off, gone = [], []
        for key, _, nodes in self.injection.parts():
            carrying = [n for n in nodes if carries(n, key)]
            if carrying:
                fault = carries(carrying[0], key)
                assert fault is not None
                off.append((carrying, key, replace(fault, enabled=False)))
                gone.append((carrying, key, None))
        if not off:
            return ()
        push = self._delivery.push_many
        switch_off = await push(off, types.RUNTIME, wait_gone=False)
        remove = await push(gone, self._delivery.plane.arm_type, wait_gone=False)
        return switch_off + remove


def deadline_verdict(injection: Injection) -> str:
    """ "held" only when readable SLO readings cover the run: at least one, and no stretch
    of `abort_after` or longer without one (start and end included), since a breach that
    long could have gone unseen; otherwise inconclusive, saying why."""
    start, end = injection.activated_at, injection.ends_at
    if start is None or end is None:
        return NEVER_TOOK_EFFECT
    seen = sorted(
        r.at for r in injection.readings if r.value is not None and not r.error and r.at >= start
    )
    if not seen:
        return "inconclusive: the steady state was never read"
    instants = [start, *seen, max(end, seen[-1])]
    longest = max(later - earlier for earlier, later in itertools.pairwise(instants))
    limit = injection.spec.steady_state.abort_after_seconds
    if longest >= limit:
        return (
            f"inconclusive: the steady state went unread for {longest:.1f}s "
            f"(abort_after {limit:g}s)"
        )
    return HELD


def _failure(
    evidence: tuple[Evidence, ...], phase: str, earlier: tuple[Evidence, ...] = ()
) -> End | None:
    bad = [e for e in evidence if e.outcome != "acked"]
    if not bad:
        return None
    first = bad[0]
    detail = f": {first.error}" if first.error else ""
    reason = f"{phase} failed: sidecar {first.sidecar} {first.outcome} {first.type}{detail}"
    return End(State.FAILED, reason, earlier + evidence, NEVER_TOOK_EFFECT)
