"""The registry of live lifecycles, and the queries over every injection.

`create` admits (`faultplane.lifecycle.admission`, a pure decision), reserves the slots
and registers the injection with its `Lifecycle` (`faultplane.lifecycle.lifecycle`) in
one step without an `await`, so concurrent CreateInjection calls cannot interleave inside
it and a stop requested at any later moment finds something to stop. Each lifecycle then
runs its injection to the end. A restart reloads every live injection
(`faultplane.lifecycle.restore`). Memory holds the live injections and a bounded window
of finished ones; `find` and `page` reach the rest in the store
(`faultplane.lifecycle.registry`). A request that may not start now and asks to wait
(on_conflict=queue, or a future not_before) is recorded QUEUED instead; the queue's half
of the scheduler is `faultplane.lifecycle.queueing`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import structlog

from faultplane.delivery.plane import Delivery, FaultPlane
from faultplane.lifecycle.admission import Admission, Refused, admit, new_injection_id
from faultplane.lifecycle.approval import ApprovalPolicy, Freeze
from faultplane.lifecycle.blackouts import Blackouts
from faultplane.lifecycle.events import EventHub, KindWatch, ReadingEvent, SchedulingEvent
from faultplane.lifecycle.journal import Journal
from faultplane.lifecycle.lifecycle import Lifecycle, Transitions
from faultplane.lifecycle.policy import PolicyRules
from faultplane.lifecycle.queueing import Queueing, future
from faultplane.lifecycle.records import SpecParser
from faultplane.lifecycle.registry import KEEP_FINISHED, InjectionRegistry, PageKey, page_key
from faultplane.lifecycle.restore import Claim, restore_live, restore_one
from faultplane.lifecycle.schedules import Schedules
from faultplane.lifecycle.sent import SentPlan, sent_plan
from faultplane.lifecycle.uptime import Uptime
from faultplane.lifecycle.watch import Watch, WatchHub
from faultplane.model.injection import Injection, SloReading, State, Transition
from faultplane.model.readings import bound_readings
from faultplane.model.spec import InjectionSpec
from faultplane.scheduling.feed import Sidecar
from faultplane.scheduling.graph import DependencyGraph

log = structlog.get_logger("faultplane.scheduler")


class NotFound(KeyError):
    pass


class Scheduler(Queueing):
    def __init__(
        self,
        plane: FaultPlane,
        journal: Journal,
        ack_timeout: float = 10.0,
        approval: ApprovalPolicy | None = None,
        deadman_ttl: float = 10.0,
        keep_finished: int = KEEP_FINISHED,
        clock: Callable[[], float] = time.time,
        graph: DependencyGraph | None = None,
    ) -> None:
        """`deadman_ttl`: the plane's lease on switched-on faults, recorded so that the
        next server can say when they went off; `keep_finished`: how many finished
        injections stay in memory (the rest are read from the store); `clock`: what the
        queue reads the time from (epoch seconds), so tests can move it; `graph`: the
        dependency rule's (who calls whom)."""
        self._delivery = Delivery(plane, ack_timeout)
        self._plane = plane
        self._journal = journal
        self._approval = approval or ApprovalPolicy()
        # Every live injection and the most recently finished ones.
        self._injections = InjectionRegistry(journal, keep_finished)
        self._live: dict[str, Lifecycle] = {}  # injections whose lifecycle still runs
        self._uptime = Uptime(journal, deadman_ttl)
        self._watchers = WatchHub()
        self._events = EventHub()  # transitions, readings and freeze changes
        # With replicas, API watchers also see the other replicas' transitions (the
        # notifier and metrics do not: each replica tells of its own injections only).
        self._everywhere = WatchHub()
        self._transitions = Transitions(journal, self._publish)
        self._freeze: Freeze | None = None
        self._clock = clock
        self._wake: asyncio.TimerHandle | None = None  # the queue's next re-plan
        self.rules = PolicyRules(journal, graph)  # limits, graph, cool-down memory
        self.blackouts = Blackouts(journal)
        self.schedules = Schedules(journal, clock)  # recurring experiments
        # Replicas (faultplane.replicas.ownership): which live injections this replica
        # takes at a restart, and where an abort of one it does not own goes.
        self.claim: Claim | None = None
        self.stop_elsewhere: Callable[[str, str, str], Awaitable[Injection]] | None = None
        self.stop_all_elsewhere: Callable[[str, str], Awaitable[list[Injection]]] | None = None
        # ...and admission across replicas: one at a time, seeing the others' live ones.
        self.admission_gate: Callable[[], AbstractAsyncContextManager[list[Injection]]] | None
        self.admission_gate = None
        self._others: list[Injection] = []

    # -- admission -------------------------------------------------------------------

    def plan(self, spec: InjectionSpec) -> Admission:
        """What `create` would admit now, each target rendered with the fault switched on;
        nothing changes. A freeze refuses creates, not plans."""
        return self._admit(spec, freeze=None, enabled=True)

    def sent(self, injection: Injection) -> SentPlan:
        """What each target of an existing injection is (or was) sent for it
        (faultplane.lifecycle.sent); no admission check, nothing changes."""
        return sent_plan(injection, self._plane.render, self._delivery.planned)

    async def create(
        self, spec: InjectionSpec, document: Mapping[str, Any], principal: str
    ) -> Injection:
        """Admit, record, and start an injection (or park it for approval, or queue it);
        returns once it is on disk. With replicas, under their shared admission lock,
        which is released only once the new injection is on disk for the next to see."""
        if self.admission_gate is None:
            return await self._create(spec, document, principal)
        async with self.admission_gate() as others:
            # Another replica may have changed the blackouts or the policy, or started an
            # experiment that begins a cool-down: read them again under the lock.
            await self.rules.load()
            await self.blackouts.load()
            self._others = [o for o in others if self._injections.get(o.id) is None]
            try:
                return await self._create(spec, document, principal)
            finally:
                self._others = []

    async def _create(
        self, spec: InjectionSpec, document: Mapping[str, Any], principal: str
    ) -> Injection:
        if self.replicated and (spec.queue.on_conflict == "queue" or future(spec, self._clock())):
            raise Refused(
                "on_conflict, not_before: the queue runs on a single server; with replicas an "
                "experiment starts now or is refused (submit without --queue and not_before)"
            )
        injection_id = new_injection_id()
        wait = self._queue_reason(spec, injection_id)
        if wait is not None and (spec.queue.on_conflict == "queue" or future(spec, self._clock())):
            return await self._enqueue(spec, document, injection_id, wait[1])
        if wait is not None:
            self._refuse_now(*wait)
        admission = self._admit(spec, self._freeze, injection_id=injection_id)
        # Admission rendered every target with these faults added: the slots are free.
        for part in admission.parts:
            self._delivery.reserve(part.targets, part.assignment_id, part.fault)
        injection = admission.injection(document)
        self._injections.add(injection)  # from here on, others see its scope
        lifecycle = self._start(injection)
        self.rules.started(spec.services, self._clock())
        # Shielded: a caller that gives up does not stop the lifecycle; one whose first
        # record failed is forgotten by `_ended`, whoever was waiting.
        await asyncio.shield(lifecycle.recorded)
        log.info("injection created", injection=injection.id, owner=spec.owner,
                 service=spec.target.service, targets=list(injection.targets),
                 state=injection.transitions[0].to_state.value)  # fmt: skip
        return injection

    def _sidecars(self, spec: InjectionSpec) -> list[list[Sidecar]]:
        """Per part, the connected sidecars of its service, as admission takes them."""
        return [
            [(s.node_id, s.labels) for s in self._plane.candidates(t.service, t.namespace)]
            for t in (part.target for part in spec.parts)
        ]

    def _admit(
        self,
        spec: InjectionSpec,
        freeze: Freeze | None,
        enabled: bool = False,
        injection_id: str | None = None,
    ) -> Admission:
        first, *more = self._sidecars(spec)
        nodes = [node for sidecars in (first, *more) for node, _ in sidecars]
        carried = {node: self._delivery.planned(node) for node in nodes}
        live = [*self._injections, *self._others]  # others: other replicas' (if any)
        return admit(
            spec, injection_id or new_injection_id(), first, live, carried,
            self._plane.render, approval=self._approval, freeze=freeze, now=time.time(),
            enabled=enabled, more_sidecars=more,
        )  # fmt: skip

    def _start(
        self, injection: Injection, restored: bool = False, remaining: float | None = None
    ) -> Lifecycle:
        lifecycle = Lifecycle(
            injection, self._delivery, self._journal, self._transitions, self._approval,
            restored, remaining,
        )  # fmt: skip
        self._live[injection.id] = lifecycle
        lifecycle.task.add_done_callback(lambda _: self._ended(lifecycle))
        return lifecycle

    def _ended(self, lifecycle: Lifecycle) -> None:
        if self._live.get(lifecycle.injection.id) is lifecycle:
            del self._live[lifecycle.injection.id]
        if lifecycle.never_admitted:
            self._injections.remove(lifecycle.injection)  # refused: as if never created
        else:
            self._injections.retire(lifecycle.injection)  # no-op unless it finished
        if not lifecycle.closing:
            self._replan()  # its slots are free: what waited for it may start

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
        previous, self._freeze = self.frozen(), Freeze(until, reason, principal, time.time())
        await self._journal.run(self._journal.store.settings.set, "freeze", self._freeze.body())
        self._events.freeze_changed(self._freeze, previous, time.time())
        self._replan()
        return self._freeze

    async def unfreeze(self) -> None:
        previous, self._freeze = self.frozen(), None
        await self._journal.run(self._journal.store.settings.set, "freeze", None)
        if previous is not None:  # lifting no freeze is no news
            self._events.freeze_changed(None, previous, time.time())
        self._replan()

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
        found = [
            inj
            for inj in self._injections
            if (not states or inj.state in states) and (not service or service in inj.spec.services)
        ]
        return sorted(found, key=page_key, reverse=True)

    async def page(
        self, states: set[State], service: str, after: PageKey | None, limit: int
    ) -> tuple[list[Injection], bool]:
        """Every injection, memory and store, newest first: up to `limit` older than
        `after`, and whether more follow. Store-listed ones carry no readings."""
        return await self._injections.page(states, service, after, limit)

    def watch(self, everywhere: bool = False) -> Watch:
        """Every transition from now on; subscribed before this returns."""
        return (self._everywhere if everywhere else self._watchers).subscribe()

    def publish_remote(self, injection: Injection, change: Transition) -> None:
        """Another replica's transition, for the watchers that asked for every one."""
        self._everywhere.publish((injection, change))

    def watch_events(self, kinds: set[str]) -> KindWatch:
        """Every event of these kinds (faultplane.lifecycle.events) from now on:
        transitions, the guard's readings, freeze changes; subscribed before this returns."""
        return self._events.subscribe_kinds(kinds)

    def scheduling_changed(self, what: str) -> None:
        """A blackout, the policy or a schedule changed through the API: tell the
        watchers that show them (the dashboard), which re-read them as their caller."""
        self._events.publish(SchedulingEvent(what))

    # -- rollback --------------------------------------------------------------------

    async def abort(self, injection_id: str, reason: str, principal: str) -> Injection:
        """Withdraw a live injection; returns once every target answered the withdrawal."""
        injection = await self.find(injection_id)
        if injection.state is State.QUEUED:
            self._cancel_queued(injection, reason, principal)
            return injection
        lifecycle = self._live.get(injection_id)
        if lifecycle is None and injection.state.live and self.stop_elsewhere is not None:
            return await self.stop_elsewhere(injection_id, reason, principal)  # its owner's
        if lifecycle is None or not injection.state.live:
            raise Refused(f"injection {injection_id} is already {injection.state.value}")
        lifecycle.abort(reason, principal)
        await asyncio.shield(lifecycle.task)
        return injection

    async def abort_all(self, reason: str, principal: str) -> list[Injection]:
        """Stop every lifecycle that exists now, whatever state each is in."""
        queued = [i for i in self._injections if i.state is State.QUEUED]
        for injection in queued:
            self._cancel_queued(injection, reason, principal)
        live = list(self._live.values())
        for lifecycle in live:
            lifecycle.abort(reason, principal)
        # Replicas: the other replicas' injections are stopped by their owners, at once.
        others = self.stop_all_elsewhere(reason, principal) if self.stop_all_elsewhere else None
        await asyncio.gather(*(asyncio.shield(lc.task) for lc in live), return_exceptions=True)
        remote = await others if others is not None else []
        return queued + [lc.injection for lc in live if not lc.never_admitted] + remote

    async def record_reading(self, injection_id: str, reading: SloReading) -> None:
        """Kept in memory at once; the store write is best effort (a failure is logged,
        never raised: the guard must go on guarding). Memory keeps a bounded, thinned
        history (`faultplane.model.readings`); the store keeps every reading."""
        injection = self.get(injection_id)
        injection.readings.append(reading)
        steady = injection.spec.steady_state
        bound_readings(injection.readings, steady.abort_after_seconds, injection.activated_at)
        self._events.publish(ReadingEvent(injection_id, steady.slo, reading))
        try:
            await self._journal.reading(injection_id, reading)
        except Exception as exc:
            log.warning("could not store an SLO reading", injection=injection_id, error=str(exc))

    def refute(self, injection_id: str, reason: str, breach_limit_at: float) -> None:
        """The steady-state guard's abort: withdraw now, without waiting here."""
        lifecycle = self._live.get(injection_id)
        if lifecycle is not None:
            lifecycle.refute(reason, breach_limit_at)

    async def close(self) -> None:
        """Stop every lifecycle task without withdrawing: leases end the faults, and a
        restart on the same store resumes what is still due."""
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        self._events.close()
        await self.schedules.close()
        live = list(self._live.values())
        for lifecycle in live:
            lifecycle.close()
        await asyncio.gather(*(lc.task for lc in live), return_exceptions=True)

    async def record_stop(self) -> None:
        """Record a clean stop, once no sidecar is served any more (the xDS server is
        down): faults left on lapse within one TTL of it. Without it, the next server
        reads the last heartbeat, as after a crash."""
        await self._uptime.end()

    def forget_departed_sidecars(self, before: float) -> int:
        """Forget sidecars gone since before `before` that carry no fault."""
        return self._delivery.forget_departed(before)

    def forget_finished_before(self, before: float) -> int:
        """Drop from memory what retention pruned from the store (finished before then)."""
        return self._injections.forget_finished_before(before)

    # -- restart ---------------------------------------------------------------------

    async def restore(self, parse_spec: SpecParser) -> None:
        """Reload the freeze and every live injection from the store (see
        `faultplane.lifecycle.restore`), then start recording this server's own uptime."""
        self._injections.parse_spec = parse_spec
        freeze = await self._journal.read(self._journal.store.settings.get, "freeze")
        self._freeze = Freeze.from_body(freeze) if freeze else None
        self._events.time_lapse(self.frozen(), time.time())
        await self.rules.load()
        await self.blackouts.load()
        await restore_live(
            parse_spec, await self._uptime.previous(),
            journal=self._journal, registry=self._injections, delivery=self._delivery,
            transitions=self._transitions,
            start=lambda injection, remaining: self._start(injection, True, remaining),
            claim=self.claim,
        )  # fmt: skip
        await self._uptime.begin()
        self._replan()  # the persisted queue: what may start now, and the next wake
        if self.replicated:
            return  # no queue, so no recurring occurrences: every replica would fire them
        await self.schedules.start(
            self._exists, self._enqueue_occurrence, lambda document: parse_spec(document, False)
        )

    async def _exists(self, injection_id: str) -> bool:
        try:
            await self.find(injection_id)
        except NotFound:
            return False
        return True

    async def _enqueue_occurrence(
        self, injection_id: str, spec: InjectionSpec, document: Mapping[str, Any]
    ) -> None:
        """A schedule's occurrence: always queued (it starts at once if nothing blocks)."""
        wait = self._queue_reason(spec, injection_id)
        await self._enqueue(spec, document, injection_id, wait[1] if wait else "scheduled")

    # -- replicas (faultplane.replicas) -------------------------------------------------

    def running(self) -> list[str]:
        """The injections whose lifecycle runs here."""
        return list(self._live)

    async def take_over(self, injection_id: str, reason: str) -> None:
        """Run the lifecycle of a live injection whose owner died, from the store: the
        restart path (`restore_one`) for one injection."""
        assert self._injections.parse_spec is not None, "restore first"
        store = self._journal.store
        stored = await self._journal.read(store.injections.get, injection_id)
        if stored is None or injection_id in self._live:
            return
        readings = await self._journal.read(store.readings.load, injection_id)
        restore_one(
            stored, readings, self._injections.parse_spec, None, registry=self._injections,
            delivery=self._delivery, transitions=self._transitions,
            start=lambda injection, remaining: self._start(injection, True, remaining),
            reason=reason,
        )  # fmt: skip

    def relinquish(self, injection_id: str) -> None:
        """Another replica owns the injection now: stop its lifecycle here without a
        withdrawal, drop its faults from what this replica serves, forget it (its state
        is read from the store)."""
        lifecycle = self._live.pop(injection_id, None)
        if lifecycle is not None:
            lifecycle.close()
            self._injections.remove(lifecycle.injection)
        self._delivery.drop(injection_id)

    async def reload_freeze(self) -> None:
        """Another replica froze or unfroze: read the freeze again."""
        freeze = await self._journal.read(self._journal.store.settings.get, "freeze")
        previous, self._freeze = self._freeze, Freeze.from_body(freeze) if freeze else None
        if self._freeze != previous:  # this replica's dashboards and notifier hear of it
            self._events.freeze_changed(self._freeze, previous, time.time())
        self._replan()

    @property
    def replicated(self) -> bool:
        """Several replicas share the store (faultplane.replicas attached its gate)."""
        return self.admission_gate is not None

    def _publish(self, injection: Injection, change: Transition) -> None:
        self._watchers.publish((injection, change))
        self._events.publish((injection, change))
        self._everywhere.publish((injection, change))
