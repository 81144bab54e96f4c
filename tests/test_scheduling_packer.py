"""Property tests of the packer, judged by the bench's independent checker.

For random queues, running sets, rules and dependency graphs: what the packer starts
breaks no rule together with everything that ran before (no two conflicting runs at
once, cool-downs, limits, windows, blackouts, deadlines); every experiment it leaves
waiting would break a rule if started now (nothing ready is left behind); the plan does
not depend on the order the queue is given in; and a whole forecast keeps every rule.
The checker (bench/scheduling/checker.py) shares no rule code with the packer.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.scheduling.checker import Started, violations
from faultplane.scheduling.graph import DependencyGraph
from faultplane.scheduling.model import Experiment, Footprint
from faultplane.scheduling.packer import State, apply, forecast, plan
from faultplane.scheduling.rules import Policy
from faultplane.scheduling.windows import OneOffBlackout, TimeRange, WeeklyBlackout, Window

T0 = datetime(2026, 12, 7, 9, tzinfo=UTC)  # a Monday, far from any DST change
SERVICES = tuple(f"s{i}" for i in range(6))
ZONES = ("UTC", "Asia/Kolkata", "America/New_York")
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def minutes(n: int) -> timedelta:
    return timedelta(minutes=n)


@st.composite
def graphs(draw: st.DrawFn) -> DependencyGraph:
    """A random DAG over the services (s_i may call s_j for i < j)."""
    pairs = [(a, b) for i, a in enumerate(SERVICES) for b in SERVICES[i + 1 :]]
    return DependencyGraph.of(draw(st.lists(st.sampled_from(pairs), max_size=8, unique=True)))


@st.composite
def windows(draw: st.DrawFn) -> tuple[Window, ...]:
    if draw(st.booleans()):
        return ()
    start = draw(st.integers(0, 23 * 4)) * 15
    length = draw(st.integers(1, 16)) * 30
    end = (start + length) % 1440  # may wrap past midnight
    rng = TimeRange(time(start // 60, start % 60), time(end // 60, end % 60))
    days = frozenset(draw(st.sets(st.integers(0, 6), min_size=1)))
    return (Window(days, (rng,), ZoneInfo(draw(st.sampled_from(ZONES)))),)


def at_minute(n: int) -> datetime:
    return T0 + minutes(n)


BEFORE = st.none() | st.integers(-30, 120).map(at_minute)
DEADLINE = st.none() | st.integers(1, 240).map(at_minute)


@st.composite
def experiment(draw: st.DrawFn) -> Experiment:
    services = draw(st.sets(st.sampled_from(SERVICES), min_size=1, max_size=2))
    possible = sorted((f"{s}-{p}", scope) for s in services for p in (0, 1) for scope in "io")
    slots = draw(st.sets(st.sampled_from(possible), min_size=1, max_size=3))
    return Experiment(
        id="",
        footprint=Footprint(frozenset(services), frozenset(slots)),
        duration=minutes(draw(st.integers(1, 90))),
        submitted_at=T0 - minutes(draw(st.integers(0, 60))),
        priority=draw(st.integers(0, 2)),
        not_before=draw(BEFORE),
        not_after=draw(DEADLINE),
        windows=draw(windows()),
        allow_dependent=draw(st.booleans()),
    )


def queues(prefix: str) -> st.SearchStrategy[tuple[Experiment, ...]]:
    """Up to six experiments with distinct ids."""
    return st.lists(experiment(), max_size=6).map(
        lambda found: tuple(replace(e, id=f"{prefix}{i}") for i, e in enumerate(found))
    )


FIRST, SECOND = queues("a"), queues("b")
COOLDOWN = st.none() | st.integers(5, 90).map(minutes)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    blackouts = []
    if draw(st.booleans()):
        start = T0 + minutes(draw(st.integers(-60, 300)))
        blackouts.append(
            OneOffBlackout("settlement", start, start + minutes(draw(st.integers(5, 120))))
        )
    if draw(st.booleans()):
        day, hour = draw(st.integers(0, 6)), draw(st.integers(0, 23))
        blackouts.append(
            WeeklyBlackout("weekly", day, time(hour), (day + draw(st.integers(0, 2))) % 7,
                           time(draw(st.integers(0, 23))), ZoneInfo("Europe/Berlin"))
        )  # fmt: skip
    return Policy(
        cooldown=draw(COOLDOWN),
        max_per_service=draw(st.none() | st.integers(1, 2)),
        max_fleet=draw(st.none() | st.integers(1, 4)),
        graph=draw(graphs()),
        blackouts=tuple(blackouts),
        frozen=draw(st.integers(0, 9)) == 0,
    )


@st.composite
def histories(draw: st.DrawFn) -> tuple[State, Policy, list[Started]]:
    """A state reached by real planning: a first queue planned at T0, the clock moved
    on, a second queue added; with every run started so far."""
    policy = draw(policies())
    state = State(T0, queue=draw(FIRST))
    decided = plan(state, policy)
    state = apply(state, decided)
    history = [Started(e, T0) for e in decided.start]
    now = T0 + minutes(draw(st.integers(0, 120)))
    second = draw(SECOND)
    left = tuple(e for e in state.queue if e.not_after is None or e.not_after > now)
    state = State(
        now,
        running=tuple(r for r in state.running if r.ends_at > now),
        queue=left + second,
        last_started=state.last_started,
    )
    return state, policy, history


@SETTINGS
@given(histories())
def test_what_the_packer_starts_breaks_no_rule_with_what_ran_before(
    case: tuple[State, Policy, list[Started]],
) -> None:
    state, policy, history = case
    assert violations(history, policy) == []
    decided = plan(state, policy)
    started = [Started(e, state.now) for e in decided.start]
    assert violations(history + started, policy) == []


@SETTINGS
@given(histories())
def test_an_experiment_left_waiting_would_break_a_rule_if_started_now(
    case: tuple[State, Policy, list[Started]],
) -> None:
    state, policy, history = case
    decided = plan(state, policy)
    started = [Started(e, state.now) for e in decided.start]
    for exp, wait in decided.waiting:
        broken = violations([*history, *started, Started(exp, state.now)], policy)
        assert broken, f"{exp.id} waits ({wait.reason}) but nothing blocks it"
        assert wait.reason


@SETTINGS
@given(histories(), st.randoms(use_true_random=False))
def test_the_plan_depends_on_the_state_not_on_the_order_of_the_queue(
    case: tuple[State, Policy, list[Started]], rnd: object
) -> None:
    state, policy, _ = case
    shuffled = list(state.queue)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    again = plan(State(state.now, state.running, tuple(shuffled), state.last_started), policy)
    assert again == plan(state, policy)


@SETTINGS
@given(histories())
def test_a_whole_forecast_keeps_every_rule_and_expires_only_at_deadlines(
    case: tuple[State, Policy, list[Started]],
) -> None:
    state, policy, history = case
    future = forecast(state, policy, timedelta(days=2))
    by_id = {e.id: e for e in state.queue}
    starts = [Started(by_id[ev.experiment], ev.at) for ev in future.events if ev.kind == "start"]
    gone = [(by_id[ev.experiment], ev.at) for ev in future.events if ev.kind == "expire"]
    assert violations(history + starts, policy, gone) == []
    times = [ev.at for ev in future.events]
    assert times == sorted(times)
    decided_ids = {s.experiment.id for s in starts} | {e.id for e, _ in gone}
    assert decided_ids | {e.id for e in future.state.queue} == set(by_id)
