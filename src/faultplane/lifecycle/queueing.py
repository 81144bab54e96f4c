"""The queue inside the running scheduler: enqueue, re-plan, start, expire, cancel.

A mixin of `Scheduler` (faultplane.lifecycle.scheduler), kept apart so that each module
has one job: this one turns the packer's decisions (faultplane.scheduling.packer, a pure
function of the injections in memory and the clock) into transitions. `_replan` is
synchronous from plan to admission, so no CreateInjection can slip in between and no
two conflicting experiments are ever both started. It runs when an experiment ends, on
freeze and unfreeze, on a timer at the packer's next wake, and once after a restart
(QUEUED injections are in the store like any live one).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import structlog

from faultplane.lifecycle.admission import Admission, Refused
from faultplane.lifecycle.approval import Freeze
from faultplane.lifecycle.blackouts import Blackouts
from faultplane.lifecycle.journal import Journal
from faultplane.lifecycle.lifecycle import OPERATOR_ABORT, Lifecycle, Transitions
from faultplane.lifecycle.policy import PolicyRules
from faultplane.lifecycle.queue import HORIZON, experiment, queue_state, seconds
from faultplane.lifecycle.registry import InjectionRegistry
from faultplane.model.injection import Injection, State
from faultplane.model.spec import InjectionSpec
from faultplane.scheduling.calendar import earliest_fit
from faultplane.scheduling.feed import Sidecar, footprint_of_spec
from faultplane.scheduling.model import Experiment, Footprint
from faultplane.scheduling.packer import State as QueueState
from faultplane.scheduling.packer import forecast, next_wake, plan
from faultplane.scheduling.rules import RULES, Policy, Situation
from faultplane.scheduling.timeline import Row, rows
from faultplane.scheduling.windows import Blackout

if TYPE_CHECKING:
    from faultplane.delivery.plane import Delivery

log = structlog.get_logger("faultplane.scheduler")

NEVER_STARTED = "inconclusive: never started"
# How soon the queue looks again after admission refused a start the packer planned.
RETRY_SECONDS = 1.0
# How a refusal names the core's rules (faultplane.scheduling.rules.RULES).
RULE_NAMES = {
    "not_before": "not_before", "calendar": "window/blackout", "cooldown": "cool-down",
    "per_service": "max_per_service", "fleet": "max_fleet",
}  # fmt: skip


class Queueing:
    """The queue's half of `Scheduler`; the attributes and methods declared here are
    the scheduler's own, named for the type checker."""

    _clock: Callable[[], float]
    _wake: asyncio.TimerHandle | None
    _injections: InjectionRegistry
    _journal: Journal
    _transitions: Transitions
    _delivery: Delivery
    _freeze: Freeze | None
    rules: PolicyRules
    blackouts: Blackouts

    if TYPE_CHECKING:  # provided by Scheduler

        def _sidecars(self, spec: InjectionSpec) -> list[list[Sidecar]]: ...
        def _admit(
            self,
            spec: InjectionSpec,
            freeze: Freeze | None,
            enabled: bool = False,
            injection_id: str | None = None,
        ) -> Admission: ...
        def _start(
            self, injection: Injection, restored: bool = False, remaining: float | None = None
        ) -> Lifecycle: ...
        def frozen(self) -> Freeze | None: ...

    def _footprint(self, injection_id: str, spec: InjectionSpec) -> Footprint:
        return footprint_of_spec(spec, injection_id, self._sidecars(spec))

    def _queue_reason(self, spec: InjectionSpec, injection_id: str) -> tuple[str, str] | None:
        """Why a new request could not start now by the queue's rules, or None: (the
        rule that objects first, its reason)."""
        now = self._clock()
        state = self._queue_state()
        mine = _as_queued(spec, injection_id, self._footprint(injection_id, spec), now)
        situation = Situation(state.now, state.running, state.last_started)
        policy = self._policy()
        for rule in RULES:
            wait = rule(mine, situation, policy)
            if wait is not None:
                return rule.__name__, wait.reason
        return None

    def _policy(self) -> Policy:
        """The core's policy now: the operator's limits and blackouts, the dependency
        graph, the freeze (faultplane.lifecycle.policy, faultplane.lifecycle.blackouts)."""
        return self.rules.policy(self.blackouts.rules(), frozen=self.frozen() is not None)

    def _queue_state(self) -> QueueState:
        return queue_state(
            self._injections, self._clock(), lambda i: self._footprint(i.id, i.spec),
            self.rules.last_started(),
        )  # fmt: skip

    def _refuse_now(self, rule: str, reason: str) -> None:
        """An immediate (refuse) request that a policy rule holds back: FAILED_PRECONDITION
        naming the rule. Overlaps on a slot and the freeze are left to admission, which
        words them as it always has."""
        if rule == "frozen" or (rule == "conflicts" and "same request path" not in reason):
            return
        name = "dependency" if rule == "conflicts" else RULE_NAMES.get(rule, rule)
        raise Refused(f"scheduling rule {name}: {reason} (on_conflict: queue would wait)")

    async def _enqueue(
        self, spec: InjectionSpec, document: Mapping[str, Any], injection_id: str, reason: str
    ) -> Injection:
        """Record it QUEUED (on disk before the caller hears of it), then re-plan."""
        injection = Injection(
            injection_id, spec, (), (), document, created_at=self._clock(),
            state=State.QUEUED, reason=reason,
        )  # fmt: skip
        await self._transitions.first(injection)
        self._injections.add(injection)
        log.info("injection queued", injection=injection_id, owner=spec.owner, reason=reason)
        self._replan()
        return injection

    def replan(self) -> None:
        """Re-plan the queue now (the timer does this at the packer's next wake)."""
        self._replan()

    def replan_soon(self, _node: str = "") -> None:
        """Re-plan once the current step is done (a sidecar connected: its registration
        completes first, then the queue sees it among the candidates)."""
        asyncio.get_running_loop().call_soon(self._replan)

    def _replan(self) -> None:
        """Start what the packer says may start, expire what is past its deadline, and
        record why the rest waits. Synchronous: nothing can be admitted between the plan
        and the starts, so two conflicting experiments are never both started."""
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        queued = {i.id: i for i in self._injections if i.state is State.QUEUED}
        if not queued:
            return
        state = self._queue_state()
        decided = plan(state, self._policy())
        for exp, why in decided.expire:
            injection = queued[exp.id]
            self._transitions.make(injection, State.EXPIRED, why, verdict=NEVER_STARTED)
            self._injections.retire(injection)
        refused = [exp for exp in decided.start if not self._begin(queued[exp.id])]
        for exp, wait in decided.waiting:
            self._set_waiting(queued[exp.id], wait.reason)
        wake = next_wake(state, decided)
        delays = [] if wake is None else [seconds(wake) - self._clock()]
        if refused:
            # The fleet changed under the plan (a restart before the sidecars are back):
            # nothing tells the queue when they return, so it looks again shortly.
            delays.append(RETRY_SECONDS)
        freeze = self.frozen()
        if freeze is not None and freeze.until is not None:
            delays.append(freeze.until - time.time())  # a freeze lapses by the wall clock
        if delays:
            delay = max(0.0, min(delays))
            self._wake = asyncio.get_running_loop().call_later(delay, self._replan)

    def _begin(self, injection: Injection) -> bool:
        """Admit a queued injection under its own id now, and start its lifecycle; False
        if admission refused it (it stays QUEUED, saying why)."""
        try:
            admission = self._admit(injection.spec, self._freeze, injection_id=injection.id)
        except Refused as exc:
            self._set_waiting(injection, f"cannot start yet: {exc}")
            return False
        for part in admission.parts:
            self._delivery.reserve(part.targets, part.assignment_id, part.fault)
        fresh = admission.injection(injection.document)
        injection.targets, injection.matched = fresh.targets, fresh.matched
        injection.part_targets = fresh.part_targets
        self._transitions.make(injection, fresh.state, f"started from the queue; {fresh.reason}")
        self._start(injection, restored=True)  # already on disk
        self.rules.started(injection.spec.services, self._clock())
        return True

    def _set_waiting(self, injection: Injection, reason: str) -> None:
        if injection.reason != reason:
            injection.reason = reason
            self._journal.save_later(injection)

    def queue(self) -> list[Row]:
        """What runs, what starts when and what waits, if nothing changes."""
        state = self._queue_state()
        policy = self._policy()
        return rows(state, policy, forecast(state, policy, HORIZON))

    def runs_into(self, blackout: Blackout) -> list[str]:
        """The running experiments planned to run into `blackout` (they are not stopped:
        a blackout governs starts; the freeze and abort are the instant levers)."""
        found = []
        for run in self._queue_state().running:
            fit = earliest_fit(run.started_at, run.experiment.duration, (), (blackout,))
            if fit.start != run.started_at:
                found.append(run.id)
        return found

    def _cancel_queued(self, injection: Injection, reason: str, principal: str) -> None:
        """A queued injection never started: ABORTED at once, nothing to withdraw."""
        self._transitions.make(
            injection, State.ABORTED, reason, by=principal, verdict=OPERATOR_ABORT
        )
        self._injections.retire(injection)


def future(spec: InjectionSpec, now: float) -> bool:
    return spec.queue.not_before is not None and spec.queue.not_before > now


def _as_queued(
    spec: InjectionSpec, injection_id: str, footprint: Footprint, now: float
) -> Experiment:
    """A new request as the packer would see it queued now."""
    probe = Injection(injection_id, spec, (), (), {}, created_at=now, state=State.QUEUED)
    return experiment(probe, footprint)
