"""Which queued experiments start now, and what would start when if nothing changes.

`plan` is a pure function of the state (clock, runs, queue, when each service was last
tested) and the policy, so the same state always gives the same plan, a restart re-plans
from the store alone, and every property is testable without a server. It goes through
the queue once, in coverage order (the service tested longest ago first, then priority,
then age, then id), and starts each experiment no rule objects to, counting the ones it
has just started as running. Because every rule is monotone (starting more never lifts an
objection), whatever it leaves waiting is blocked by the final set too: no ready
experiment is left behind, and no two started ones conflict.

`forecast` replays `plan` on a simulated clock, jumping from event to event (a run
ends, a block lifts by the clock, a deadline passes): the timeline of `faultplane queue`,
and the bench's simulation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from faultplane.scheduling.clock import show
from faultplane.scheduling.model import Experiment, Run, Wait
from faultplane.scheduling.rules import RULES, Policy, Rule, Situation, why_waits

_NEVER = datetime.min.replace(tzinfo=UTC)  # a service never tested is the oldest


@dataclass(frozen=True)
class State:
    """Everything `plan` depends on. `last_started`: per service, when an experiment on
    it last started (the cool-down's memory and the coverage order's 'last tested')."""

    now: datetime
    running: tuple[Run, ...] = ()
    queue: tuple[Experiment, ...] = ()
    last_started: Mapping[str, datetime] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """What to do at `State.now`: start these, expire these (with why), and why each of
    the others waits."""

    start: tuple[Experiment, ...]
    expire: tuple[tuple[Experiment, str], ...]
    waiting: tuple[tuple[Experiment, Wait], ...]


Planner = Callable[[State, Policy], Plan]


Order = Callable[[Experiment, Mapping[str, datetime]], tuple[Any, ...]]


def coverage_order(exp: Experiment, last_started: Mapping[str, datetime]) -> tuple[Any, ...]:
    """Sort key: oldest last-tested service first, then priority, age, id."""
    oldest = min((last_started.get(s, _NEVER) for s in exp.footprint.services), default=_NEVER)
    return (oldest, -exp.priority, exp.submitted_at, exp.id)


def expired(exp: Experiment, now: datetime) -> str | None:
    """Why a queued experiment is EXPIRED at `now`, or None."""
    if exp.not_after is not None and now >= exp.not_after:
        return f"not started by its deadline {show(exp.not_after)}"
    return None


def plan(
    state: State,
    policy: Policy,
    order: Order = coverage_order,
    rules: Sequence[Rule] = RULES,
) -> Plan:
    """The experiments to start at `state.now` (see the module docstring). `order` and
    `rules` are the server's; the bench passes others to replay simpler strategies."""
    now = state.now
    runs = list(state.running)
    last = dict(state.last_started)
    start: list[Experiment] = []
    expire: list[tuple[Experiment, str]] = []
    held: list[Experiment] = []
    for exp in sorted(state.queue, key=lambda e: order(e, state.last_started)):
        late = expired(exp, now)
        if late is not None:
            expire.append((exp, late))
        elif why_waits(exp, Situation(now, tuple(runs), last), policy, rules) is None:
            start.append(exp)
            runs.append(Run(exp, now))
            last.update((s, now) for s in exp.footprint.services)
        else:
            held.append(exp)
    final = Situation(now, tuple(runs), last)
    waiting = []
    for exp in held:
        wait = why_waits(exp, final, policy, rules)
        assert wait is not None, "rules are monotone: what waited still waits"
        waiting.append((exp, wait))
    return Plan(tuple(start), tuple(expire), tuple(waiting))


def apply(state: State, decided: Plan) -> State:
    """The state once `decided` is carried out: started ones run, expired ones leave."""
    gone = {e.id for e in decided.start} | {e.id for e, _ in decided.expire}
    last = dict(state.last_started)
    for exp in decided.start:
        last.update((s, state.now) for s in exp.footprint.services)
    return replace(
        state,
        running=state.running + tuple(Run(e, state.now) for e in decided.start),
        queue=tuple(e for e in state.queue if e.id not in gone),
        last_started=last,
    )


@dataclass(frozen=True)
class Event:
    """One step of a forecast: an experiment starts, ends or expires at `at`."""

    at: datetime
    kind: str  # start | end | expire
    experiment: str
    reason: str = ""


@dataclass(frozen=True)
class Forecast:
    """The events up to the horizon, in order, and the state there (still queued ones
    with why they wait)."""

    events: tuple[Event, ...]
    state: State
    waiting: tuple[tuple[Experiment, Wait], ...]


def next_wake(state: State, decided: Plan) -> datetime | None:
    """The next instant anything can change by the clock alone."""
    times = [r.ends_at for r in state.running]
    for exp, wait in decided.waiting:
        if wait.until is not None and wait.until > state.now:
            times.append(wait.until)
        if exp.not_after is not None:
            times.append(exp.not_after)
    later = [t for t in times if t > state.now]
    return min(later) if later else None


def forecast(state: State, policy: Policy, horizon: timedelta, planner: Planner = plan) -> Forecast:
    """What starts, ends and expires when over `horizon` if nothing else changes: runs
    end at their planned end, nothing new is queued. `planner` is replaceable so the
    bench can replay other strategies through the same clock."""
    until = state.now + horizon
    events: list[Event] = []
    while True:
        ending = sorted((r for r in state.running if r.ends_at <= state.now), key=lambda r: r.id)
        events.extend(Event(state.now, "end", r.id) for r in ending)
        state = replace(state, running=tuple(r for r in state.running if r.ends_at > state.now))
        decided = planner(state, policy)
        events.extend(Event(state.now, "expire", e.id, why) for e, why in decided.expire)
        events.extend(Event(state.now, "start", e.id) for e in decided.start)
        state = apply(state, decided)
        step = next_wake(state, decided)
        if step is None or step > until:
            return Forecast(tuple(events), state, decided.waiting)
        state = replace(state, now=step)
