"""The registry of injections: admission, queries, approval, freeze and rollback.

Admission (freeze, target selection, conflict and slot checks, slot reservation, and the
lifecycle with its stop future) runs without an `await`, so concurrent CreateInjection
calls cannot interleave inside it and a stop requested at any later moment finds
something to stop. Each admitted injection then runs one `Lifecycle` task (see
`faultplane.lifecycle.lifecycle`); a restart reloads every live injection (see `restore`)
and records, in each resumed one's history, the outage it went through (see
`faultplane.lifecycle.uptime`). Memory holds the live injections and a bounded window of
finished ones; `find` and `page` reach the rest in the store (see
`faultplane.lifecycle.registry`).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from faultplane.delivery.plane import Delivery, FaultPlane, SlotsExhausted
from faultplane.guard.readings import bound_readings
from faultplane.lifecycle.approval import ApprovalPolicy, Freeze
from faultplane.lifecycle.journal import Journal
from faultplane.lifecycle.lifecycle import (
    LEASE_GRACE_SECONDS,
    REFUTED,
    SYSTEM,
    End,
    Lifecycle,
)
from faultplane.lifecycle.records import SpecParser, injection_from_record
from faultplane.lifecycle.registry import KEEP_FINISHED, InjectionRegistry, PageKey
from faultplane.lifecycle.restore import Finish, Resume, no_longer_fits, restore_decision
from faultplane.lifecycle.uptime import Uptime, outage_reason
from faultplane.lifecycle.watch import Watch, WatchHub
from faultplane.model.injection import Injection, SloReading, State, Transition
from faultplane.model.spec import InjectionSpec
from faultplane.model.targets import select_targets
from faultplane.render.faults import FaultAssignment
from faultplane.render.resources import Resources

log = structlog.get_logger("faultplane.scheduler")
LIVE_STATES = tuple(state.value for state in State if state.live)


class Refused(Exception):
    """The request is valid but cannot be carried out now (FAILED_PRECONDITION)."""


class NotFound(KeyError):
    pass


@dataclass(frozen=True)
class Plan:
    matched: tuple[str, ...]
    targets: tuple[str, ...]
    rendered: dict[str, Resources]  # per target: what it would be sent, fault switched on


class Scheduler:
    def __init__(
        self,
        plane: FaultPlane,
        journal: Journal,
        ack_timeout: float = 10.0,
        approval: ApprovalPolicy | None = None,
        deadman_ttl: float = 10.0,
        keep_finished: int = KEEP_FINISHED,
    ) -> None:
        """`deadman_ttl`: the plane's lease on switched-on faults, recorded so that the
        next server can say when they went off; `keep_finished`: how many finished
        injections stay in memory (the rest are read from the store)."""
        self._delivery = Delivery(plane, ack_timeout)
        self._plane = plane
        self._journal = journal
        self._approval = approval or ApprovalPolicy()
        # Every live injection and the most recently finished ones.
        self._injections = InjectionRegistry(journal, keep_finished)
        self._live: dict[str, Lifecycle] = {}  # injections whose lifecycle still runs
        self._uptime = Uptime(journal, deadman_ttl)
        self._watchers = WatchHub()
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
        """Admit, record, and start an injection (or park it for approval); returns once
        it is on disk."""
        lifecycle = self._admit(spec, document)
        # Shielded: a caller that gives up does not stop the lifecycle; one whose first
        # record failed is forgotten by `_ended`, whoever was waiting.
        await asyncio.shield(lifecycle.recorded)
        injection = lifecycle.injection
        log.info("injection created", injection=injection.id, owner=spec.owner,
                 service=spec.target.service, targets=list(injection.targets),
                 state=injection.transitions[0].to_state.value)  # fmt: skip
        return injection

    def _admit(self, spec: InjectionSpec, document: Mapping[str, Any]) -> Lifecycle:
        """Every check and the registration, without an await."""
        if self._freeze is not None and self._freeze.active(time.time()):
            raise Refused(self._freeze.describe())
        injection_id = new_injection_id()
        matched, targets = self._select(spec, injection_id)
        armed = FaultAssignment(injection_id, spec.fault, spec.target.scope, enabled=False)
        try:
            self._delivery.reserve(targets, injection_id, armed)
        except SlotsExhausted as exc:
            raise Refused(f"target: {exc}") from exc
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
        self._injections.add(injection)  # from here on, others see its scope
        return self._run(injection)

    def _run(
        self, injection: Injection, resume: Resume | None = None, restored: bool = False
    ) -> Lifecycle:
        lifecycle = Lifecycle(
            injection, self._delivery, self._journal, self._approval, self._publish,
            resume, restored,
        )  # fmt: skip
        self._live[injection.id] = lifecycle
        lifecycle.task.add_done_callback(lambda _: self._ended(lifecycle))
        return lifecycle

    def _ended(self, lifecycle: Lifecycle) -> None:
        if self._live.get(lifecycle.injection.id) is lifecycle:
            del self._live[lifecycle.injection.id]
        if _never_admitted(lifecycle):
            self._injections.remove(lifecycle.injection)  # refused: as if never created
        else:
            self._injections.retire(lifecycle.injection)  # no-op unless it finished

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
        for other in self._injections:  # every live injection is in memory
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

    # -- approval and freeze -----------------------------------------------------------

    def approve(self, injection_id: str, principal: str) -> Injection:
        injection = self.get(injection_id)
        lifecycle = self._live.get(injection_id)
        if injection.state is not State.PENDING_APPROVAL or lifecycle is None:
            raise Refused(
                f"injection {injection_id} is {injection.state.value}, not PENDING_APPROVAL"
            )
        if principal == injection.owner:
            raise Refused(f"{principal} owns {injection_id}: someone else must approve it")
        lifecycle.approve(principal)
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
        """An injection in memory: every live one, and the recently finished ones."""
        injection = self._injections.get(injection_id)
        if injection is None:
            raise NotFound(injection_id)
        return injection

    async def find(self, injection_id: str) -> Injection:
        """Any injection: from memory, else from the store (off the event loop)."""
        injection = await self._injections.find(injection_id)
        if injection is None:
            raise NotFound(injection_id)
        return injection

    @property
    def in_memory(self) -> int:
        """How many injections memory holds (live ones plus the recent finished window)."""
        return len(self._injections)

    def active(self) -> list[Injection]:
        """What the guard watches: ACTIVE injections, and PENDING ones whose fault is
        already switched on while the last ACKs are awaited."""
        return [
            inj
            for inj in self._injections
            if inj.state is State.ACTIVE
            or (inj.state is State.PENDING and self._delivery.leased(inj.id))
        ]

    def list(self, states: set[State] | None = None, service: str = "") -> list[Injection]:
        """The injections in memory, newest first (`page` lists the store's too)."""
        return sorted(
            (
                inj
                for inj in self._injections
                if (not states or inj.state in states)
                and (not service or inj.spec.target.service == service)
            ),
            key=lambda inj: (inj.created_at, inj.id),
            reverse=True,
        )

    async def page(
        self, states: set[State], service: str, after: PageKey | None, limit: int
    ) -> tuple[list[Injection], bool]:
        """Every injection, memory and store, newest first: up to `limit` older than
        `after`, and whether more follow. Store-listed ones carry no readings."""
        return await self._injections.page(states, service, after, limit)

    def watch(self) -> Watch:
        """Every transition from now on; subscribed before this returns."""
        return self._watchers.subscribe()

    # -- rollback --------------------------------------------------------------------

    async def abort(self, injection_id: str, reason: str, principal: str) -> Injection:
        """Withdraw a live injection; returns once every target answered the withdrawal."""
        injection = await self.find(injection_id)
        lifecycle = self._live.get(injection_id)
        if lifecycle is None or not injection.state.live:
            raise Refused(f"injection {injection_id} is already {injection.state.value}")
        lifecycle.request_stop(_operator_abort(reason, principal))
        await asyncio.shield(lifecycle.task)
        return injection

    async def abort_all(self, reason: str, principal: str) -> list[Injection]:
        """Stop every lifecycle that exists now, whatever state each is in."""
        live = list(self._live.values())
        for lifecycle in live:
            lifecycle.request_stop(_operator_abort(reason, principal))
        await asyncio.gather(*(asyncio.shield(lc.task) for lc in live), return_exceptions=True)
        return [lc.injection for lc in live if not _never_admitted(lc)]

    async def record_reading(self, injection_id: str, reading: SloReading) -> None:
        """Kept in memory at once; the store write is best effort (a failure is logged,
        never raised: the guard must go on guarding). Memory keeps a bounded, thinned
        history (`faultplane.guard.readings`); the store keeps every reading."""
        injection = self.get(injection_id)
        injection.readings.append(reading)
        steady = injection.spec.steady_state
        bound_readings(injection.readings, steady.abort_after_seconds, injection.activated_at)
        try:
            await self._journal.reading(injection_id, reading)
        except Exception as exc:
            log.warning("could not store an SLO reading", injection=injection_id, error=str(exc))

    def refute(self, injection_id: str, reason: str, breach_limit_at: float) -> None:
        """The steady-state guard's abort: withdraw now, without waiting here."""
        lifecycle = self._live.get(injection_id)
        if lifecycle is None or lifecycle.stop.done():
            return
        lifecycle.injection.breach_limit_at = breach_limit_at
        lifecycle.request_stop(End(State.ABORTED, reason, verdict=REFUTED))

    async def close(self) -> None:
        """Stop every lifecycle task without withdrawing: leases end the faults, and a
        restart on the same store resumes what is still due."""
        live = list(self._live.values())
        for lifecycle in live:
            lifecycle.close()
        await asyncio.gather(*(lc.task for lc in live), return_exceptions=True)

    async def record_stop(self) -> None:
        """Record a clean stop, once no sidecar is served any more (the xDS server is
        down): faults left on lapse within one TTL of it. Without it, the next server
        reads the last heartbeat, as after a crash."""
        await self._uptime.end()

    def forget_finished_before(self, before: float) -> int:
        """Drop from memory what retention pruned from the store (finished before then)."""
        return self._injections.forget_finished_before(before)

    # -- restart ---------------------------------------------------------------------

    async def restore(self, parse_spec: SpecParser) -> None:
        """Reload every live injection from the store: resume the ones still due (their
        history then shows the outage: an ACTIVE -> ACTIVE transition saying when the
        fault was off, see `faultplane.lifecycle.uptime`), finish the rest (their faults
        are already gone with the lease). Finished injections stay in the store, found
        there on demand. Then start recording this server's own uptime."""
        store = self._journal.store
        self._injections.parse_spec = parse_spec
        freeze = await self._journal.read(store.get_setting, "freeze")
        self._freeze = Freeze.from_body(freeze) if freeze else None
        previous = await self._uptime.previous()
        for stored in await self._journal.read(store.load_injections, LIVE_STATES):
            readings = await self._journal.read(store.slo_readings, stored.id)
            try:
                injection = injection_from_record(stored, readings, parse_spec, strict=False)
            except Exception:
                # Unreadable: nothing of it can be put back (its lease has ended whatever
                # was on); the server starts for everything else.
                log.exception("cannot reload a stored injection; left as it is", id=stored.id)
                continue
            self._injections.add(injection)
            if not injection.state.live:
                continue
            now = time.time()
            decision = restore_decision(injection, now, parse_spec)
            if not isinstance(decision, Finish):
                decision = self._resume(injection, decision) or decision
            if isinstance(decision, Resume):
                reason = outage_reason(previous, injection, now, decision.remaining)
                change = injection.transition(State.ACTIVE, reason)
                self._journal.record(injection, change, SYSTEM)
                self._publish(injection, change)
            elif isinstance(decision, Finish):
                injection.verdict = decision.verdict
                change = injection.transition(decision.state, decision.reason)
                self._journal.record(injection, change, SYSTEM)  # retried; start goes on
                self._publish(injection, change)
                self._injections.retire(injection)
        await self._uptime.begin()

    def _resume(self, injection: Injection, decision: Resume | None) -> Finish | None:
        """Put a restored injection back in its targets' desired state (resuming) or
        reserve its slots (waiting for approval), and run its lifecycle; a Finish if its
        targets can no longer carry it."""
        spec = injection.spec
        try:
            if decision is None:
                armed = FaultAssignment(injection.id, spec.fault, spec.target.scope, False)
                self._delivery.reserve(injection.targets, injection.id, armed)
            else:
                # Back in every target's desired state before any sidecar reconnects.
                log.info("resuming injection", injection=injection.id, left_s=decision.remaining)
                self._delivery.lease(
                    injection.id, time.monotonic() + decision.remaining + LEASE_GRACE_SECONDS
                )
                fault = FaultAssignment(injection.id, spec.fault, spec.target.scope, True)
                self._delivery.place(injection.targets, injection.id, fault)
        except (KeyError, SlotsExhausted) as exc:
            self._delivery.drop(injection.id)
            return no_longer_fits(injection, exc)
        self._run(injection, decision, restored=True)
        return None

    def _publish(self, injection: Injection, change: Transition) -> None:
        self._watchers.publish((injection, change))


def _never_admitted(lifecycle: Lifecycle) -> bool:
    """Its first record failed: CreateInjection refused it, nobody saw it start."""
    recorded = lifecycle.recorded
    return recorded.done() and not recorded.cancelled() and recorded.exception() is not None


def _operator_abort(reason: str, principal: str) -> End:
    return End(State.ABORTED, reason, verdict="inconclusive: aborted by an operator", by=principal)


def new_injection_id() -> str:
    return f"inj-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"
