"""Owns every injection from admission to withdrawal.

Admission (freeze, target selection, conflict and slot checks, registration) runs without
an `await`, so concurrent CreateInjection calls on the event loop cannot interleave inside
it. Each admitted injection is on disk before anything is pushed, and then runs one
lifecycle task:

    [PENDING_APPROVAL -> approved] -> arm (RDS, faults at 0 %) -> enable (RTDS keys,
      leased) -> ACTIVE -> deadline timer | abort | guard | activation failure
      -> the end is recorded -> withdraw (RTDS first: instant off; then RDS)
      -> COMPLETED | ABORTED | FAILED

Every push waits for each target's ACK (bounded by `ack_timeout`); the answers are kept
as the transition's evidence. A restart reloads every injection (see `restore`).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import structlog

from faultplane.scheduler.approval import ApprovalPolicy, Freeze
from faultplane.scheduler.delivery import Delivery, FaultPlane, SlotsExhausted
from faultplane.scheduler.journal import Journal
from faultplane.scheduler.model import Evidence, Injection, SloReading, State, Transition
from faultplane.scheduler.records import SpecParser, injection_from_record
from faultplane.scheduler.restore import Resume, restore_decision
from faultplane.scheduler.targets import select_targets
from faultplane.scheduler.watch import Watch
from faultplane.spec import InjectionSpec
from faultplane.xds import types
from faultplane.xds.faults import FaultAssignment
from faultplane.xds.resources import Resources

log = structlog.get_logger("faultplane.scheduler")

# The lease on switched-on faults outlives the deadline by this much, so the timer, not
# the lease, ends a fault while the control server is up.
LEASE_GRACE_SECONDS = 0.5
SYSTEM = "faultplane"  # the principal of transitions nobody asked for (deadline, guard)
HELD = "hypothesis held"
REFUTED = "hypothesis refuted"


class Refused(Exception):
    """The request is valid but cannot be carried out now (FAILED_PRECONDITION)."""


class NotFound(KeyError):
    pass


@dataclass(frozen=True)
class Plan:
    matched: tuple[str, ...]
    targets: tuple[str, ...]
    rendered: dict[str, Resources]  # per target: what it would be sent, fault switched on


@dataclass(frozen=True)
class _End:
    state: State
    reason: str
    evidence: tuple[Evidence, ...] = ()
    verdict: str = ""
    by: str = SYSTEM


class Scheduler:
    def __init__(
        self,
        plane: FaultPlane,
        journal: Journal,
        ack_timeout: float = 10.0,
        approval: ApprovalPolicy | None = None,
    ) -> None:
        self._delivery = Delivery(plane, ack_timeout)
        self._plane = plane
        self._journal = journal
        self._approval = approval or ApprovalPolicy()
        self._injections: dict[str, Injection] = {}
        self._stops: dict[str, asyncio.Future[_End]] = {}
        self._approvals: dict[str, asyncio.Future[str]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._watchers: set[asyncio.Queue[tuple[Injection, Transition]]] = set()
        self._freeze: Freeze | None = None

    # -- admission -------------------------------------------------------------------

    def plan(self, spec: InjectionSpec) -> Plan:
        injection_id = new_injection_id()
        matched, targets = self._select(spec, injection_id)
        fault = FaultAssignment(injection_id, spec.fault, spec.target.scope, enabled=True)
        return Plan(matched, targets, {node: self._render_with(node, fault) for node in targets})

    async def create(
        self, spec: InjectionSpec, document: Mapping[str, Any], principal: str
    ) -> Injection:
        """Admit, record, and start an injection (or park it for approval)."""
        if self._freeze is not None and self._freeze.active(time.time()):
            raise Refused(self._freeze.describe())
        injection_id = new_injection_id()
        matched, targets = self._select(spec, injection_id)
        needs = self._approval.reasons(spec)
        first = State.PENDING_APPROVAL if needs else State.PENDING
        reason = (
            f"waiting for approval by someone other than {spec.owner}: {'; '.join(needs)}"
            if needs
            else "accepted, pushing to targets"
        )
        injection = Injection(
            injection_id, spec, targets, matched, document, state=first, reason=reason
        )
        self._injections[injection_id] = injection  # from here on, others see its scope
        try:
            await self._journal.transition(injection, injection.transitions[0], principal)
        except Exception:
            del self._injections[injection_id]
            raise
        log.info("injection created", injection=injection_id, owner=spec.owner,
                 service=spec.target.service, targets=list(targets), state=first.value)  # fmt: skip
        self._start(injection)
        self._publish(injection, injection.transitions[0])
        return injection

    def _select(
        self, spec: InjectionSpec, injection_id: str
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        target = spec.target
        sidecars = [(s.node_id, s.labels) for s in self._plane.candidates(target.service)]
        matched, chosen = select_targets(target, injection_id, sidecars)
        if not chosen:
            raise Refused(
                f"target: selector {target.selector.text!r} matches no connected sidecar "
                f"of {target.service} ({len(sidecars)} connected)"
            )
        if spec.steady_state.compare == "control" and len(sidecars) == len(chosen):
            raise Refused(
                f"steady_state.compare: control mode needs unfaulted sidecars of "
                f"{target.service}, but all {len(sidecars)} would be faulted"
            )
        for other in self._injections.values():
            if other.state.live and other.spec.target.scope == target.scope:
                shared = sorted(set(other.targets) & set(chosen))
                if shared:
                    raise Refused(
                        f"target: sidecar {shared[0]} already has live injection {other.id} "
                        "on the same traffic scope"
                    )
        fault = FaultAssignment(injection_id, spec.fault, target.scope, enabled=False)
        for node in chosen:
            self._render_with(node, fault)
        return matched, chosen

    def _render_with(self, node: str, fault: FaultAssignment) -> Resources:
        try:
            return self._delivery.render_with(node, fault)
        except SlotsExhausted as exc:
            raise Refused(f"target: sidecar {node}: {exc}") from exc

    def _start(self, injection: Injection, resume: Resume | None = None) -> None:
        loop = asyncio.get_running_loop()
        self._stops[injection.id] = loop.create_future()
        if injection.state is State.PENDING_APPROVAL:
            self._approvals[injection.id] = loop.create_future()
        self._tasks[injection.id] = asyncio.create_task(self._lifecycle(injection, resume))

    # -- approval and freeze -----------------------------------------------------------

    def approve(self, injection_id: str, principal: str) -> Injection:
        injection = self.get(injection_id)
        if injection.state is not State.PENDING_APPROVAL:
            raise Refused(
                f"injection {injection_id} is {injection.state.value}, not PENDING_APPROVAL"
            )
        if principal == injection.owner:
            raise Refused(f"{principal} owns {injection_id}: someone else must approve it")
        waiting = self._approvals[injection_id]
        if not waiting.done():
            waiting.set_result(principal)
        return injection

    async def freeze(self, until: float | None, reason: str, principal: str) -> Freeze:
        self._freeze = Freeze(until, reason, principal, time.time())
        await self._journal.run(self._journal.store.set_setting, "freeze", self._freeze.body())
        return self._freeze

    async def unfreeze(self) -> None:
        self._freeze = None
        await self._journal.run(self._journal.store.set_setting, "freeze", None)

    def frozen(self) -> Freeze | None:
        if self._freeze is not None and not self._freeze.active(time.time()):
            return None
        return self._freeze

    # -- queries ---------------------------------------------------------------------

    def get(self, injection_id: str) -> Injection:
        try:
            return self._injections[injection_id]
        except KeyError:
            raise NotFound(injection_id) from None

    def active(self) -> list[Injection]:
        return [inj for inj in self._injections.values() if inj.state is State.ACTIVE]

    def list(self, states: set[State] | None = None, service: str = "") -> list[Injection]:
        """Newest first."""
        return sorted(
            (
                inj
                for inj in self._injections.values()
                if (not states or inj.state in states)
                and (not service or inj.spec.target.service == service)
            ),
            key=lambda inj: (inj.created_at, inj.id),
            reverse=True,
        )

    def watch(self) -> Watch:
        """Every transition from now on; subscribed before this returns."""
        return Watch(self._watchers)

    # -- rollback --------------------------------------------------------------------

    async def abort(self, injection_id: str, reason: str, principal: str) -> Injection:
        """Withdraw a live injection; returns once every target answered the withdrawal."""
        injection = self.get(injection_id)
        if not injection.state.live:
            raise Refused(f"injection {injection_id} is already {injection.state.value}")
        self._request_stop(injection_id, _operator_abort(reason, principal))
        await asyncio.shield(self._tasks[injection_id])
        return injection

    async def abort_all(self, reason: str, principal: str) -> list[Injection]:
        live = [inj for inj in self._injections.values() if inj.state.live]
        for injection in live:
            self._request_stop(injection.id, _operator_abort(reason, principal))
        await asyncio.gather(*(asyncio.shield(self._tasks[inj.id]) for inj in live))
        return live

    async def record_reading(self, injection_id: str, reading: SloReading) -> None:
        self.get(injection_id).readings.append(reading)
        await self._journal.reading(injection_id, reading)

    def refute(self, injection_id: str, reason: str, breach_limit_at: float) -> None:
        """The steady-state guard's abort: withdraw now, without waiting here."""
        injection = self.get(injection_id)
        if injection.state.live and not self._stops[injection_id].done():
            injection.breach_limit_at = breach_limit_at
            self._request_stop(injection_id, _End(State.ABORTED, reason, verdict=REFUTED))

    async def close(self) -> None:
        """Stop every lifecycle task without withdrawing: leases end the faults, and a
        restart on the same store resumes what is still due."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def _request_stop(self, injection_id: str, end: _End) -> None:
        stop = self._stops[injection_id]
        if not stop.done():
            stop.set_result(end)

    # -- restart ---------------------------------------------------------------------

    async def restore(self, parse_spec: SpecParser) -> None:
        """Reload every injection from the store: resume the live ones that are still due,
        finish the rest (their faults are already gone with the lease)."""
        store = self._journal.store
        freeze = await self._journal.run(store.get_setting, "freeze")
        self._freeze = Freeze.from_body(freeze) if freeze else None
        for stored in await self._journal.run(store.load_injections, None):
            readings = await self._journal.run(store.slo_readings, stored.id)
            injection = injection_from_record(stored, readings, parse_spec)
            self._injections[injection.id] = injection
            if not injection.state.live:
                continue
            decision = restore_decision(injection, time.time())
            if decision is None:
                self._start(injection)
            elif isinstance(decision, Resume):
                # Back in every target's desired state before any sidecar reconnects.
                log.info("resuming injection", injection=injection.id, left_s=decision.remaining)
                spec = injection.spec
                self._delivery.lease(
                    injection.id, time.monotonic() + decision.remaining + LEASE_GRACE_SECONDS
                )
                fault = FaultAssignment(injection.id, spec.fault, spec.target.scope, True)
                self._delivery.place(injection.targets, injection.id, fault)
                self._start(injection, decision)
            else:
                injection.verdict = decision.verdict
                await self._transition(injection, decision.state, decision.reason)

    # -- lifecycle -------------------------------------------------------------------

    async def _lifecycle(self, injection: Injection, resume: Resume | None) -> None:
        end = await self._run_until_end(injection, resume)
        injection.ending = (end.state, end.reason, end.verdict)
        if end.state is not State.COMPLETED:
            # A restart must finish this end, not resume the fault. (A deadline needs no
            # record: a restart past it completes the injection anyway, and the withdrawal
            # goes out without waiting for a disk commit.)
            await self._journal.save(injection)
        evidence = await self._withdraw(injection)
        injection.verdict = end.verdict
        await self._transition(injection, end.state, end.reason, end.evidence + evidence, end.by)
        self._delivery.lease(injection.id, None)

    async def _run_until_end(self, injection: Injection, resume: Resume | None) -> _End:
        stop = self._stops[injection.id]
        if injection.state is State.PENDING_APPROVAL:
            approved = await self._await_approval(injection, stop)
            if approved is not None:
                return approved
        if resume is None:
            activation = asyncio.create_task(self._activate(injection))
            await asyncio.wait({activation, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not activation.done():
                activation.cancel()
                await asyncio.gather(activation, return_exceptions=True)
                return stop.result()
            if (failure := activation.result()) is not None:
                return failure
            assert injection.ends_at is not None
            remaining = injection.ends_at - time.time()  # the clock started at ACTIVE
        else:
            remaining = resume.remaining
        if stop.done():
            return stop.result()
        deadline = _End(State.COMPLETED, "deadline reached", verdict=HELD)
        timer = asyncio.get_running_loop().call_later(
            max(0.0, remaining), self._request_stop, injection.id, deadline
        )
        try:
            return await stop
        finally:
            timer.cancel()

    async def _await_approval(
        self, injection: Injection, stop: asyncio.Future[_End]
    ) -> _End | None:
        """None once approved (now PENDING); else why it ended while waiting."""
        approval = self._approvals[injection.id]
        timeout = self._approval.timeout_seconds - (time.time() - injection.created_at)
        done, _ = await asyncio.wait(
            {approval, stop}, timeout=max(0.0, timeout), return_when=asyncio.FIRST_COMPLETED
        )
        if stop in done:
            return stop.result()
        if approval not in done:
            return _End(
                State.ABORTED, f"approval expired after {self._approval.timeout_seconds:g}s"
            )
        approver = approval.result()
        injection.approved_by = approver
        await self._transition(
            injection, State.PENDING, f"approved by {approver}, pushing to targets", by=approver
        )
        return None

    async def _activate(self, injection: Injection) -> _End | None:
        """Arm, then enable, on every target; None once ACTIVE, else why it failed."""
        armed = FaultAssignment(
            injection.id, injection.spec.fault, injection.spec.target.scope, False
        )
        arm = await self._delivery.push(injection.targets, injection.id, armed, types.ROUTE)
        if failure := _failure(arm, "arming"):
            return failure
        self._delivery.lease(
            injection.id, time.monotonic() + injection.spec.duration_seconds + LEASE_GRACE_SECONDS
        )
        enabled = replace(armed, enabled=True)
        enable = await self._delivery.push(injection.targets, injection.id, enabled, types.RUNTIME)
        if failure := _failure(enable, "switching on", arm):
            return failure
        await self._transition(
            injection, State.ACTIVE, "every target acknowledged the fault", arm + enable
        )
        return None

    async def _withdraw(self, injection: Injection) -> tuple[Evidence, ...]:
        """RTDS first (the fault stops at once), then RDS (the config goes away)."""
        carrying = [n for n in injection.targets if self._delivery.carries(n, injection.id)]
        if not carrying:
            return ()
        fault = self._delivery.carries(carrying[0], injection.id)
        assert fault is not None
        off = replace(fault, enabled=False)
        push = self._delivery.push
        switch_off = await push(carrying, injection.id, off, types.RUNTIME, wait_gone=False)
        remove = await push(carrying, injection.id, None, types.ROUTE, wait_gone=False)
        return switch_off + remove

    async def _transition(
        self,
        injection: Injection,
        state: State,
        reason: str,
        evidence: tuple[Evidence, ...] = (),
        by: str = SYSTEM,
    ) -> None:
        change = injection.transition(state, reason, evidence)
        await self._journal.transition(injection, change, by)
        log.info("injection state changed", injection=injection.id, state=state.value,
                 reason=reason, sidecars=len(evidence))  # fmt: skip
        self._publish(injection, change)

    def _publish(self, injection: Injection, change: Transition) -> None:
        for queue in self._watchers:
            queue.put_nowait((injection, change))


def _failure(
    evidence: tuple[Evidence, ...], phase: str, earlier: tuple[Evidence, ...] = ()
) -> _End | None:
    bad = [e for e in evidence if e.outcome != "acked"]
    if not bad:
        return None
    first = bad[0]
    detail = f": {first.error}" if first.error else ""
    reason = f"{phase} failed: sidecar {first.sidecar} {first.outcome} {first.type}{detail}"
    return _End(
        State.FAILED, reason, earlier + evidence, "inconclusive: the fault never took effect"
    )


def _operator_abort(reason: str, principal: str) -> _End:
    return _End(State.ABORTED, reason, verdict="inconclusive: aborted by an operator", by=principal)


def new_injection_id() -> str:
    return f"inj-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"
