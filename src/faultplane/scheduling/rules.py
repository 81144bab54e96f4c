"""The server's rules for starting a queued experiment now, each with its reason to wait.

Every rule looks at one candidate against what runs now (including what the packer has
just decided to start) and the clock, and answers None (no objection) or a `Wait` with
the sentence an operator reads in `faultplane ls`. Every rule is monotone: starting more
experiments never lifts an objection. That is what lets the packer decide greedily and
still guarantee that an experiment left waiting is really blocked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from faultplane.scheduling.calendar import earliest_fit
from faultplane.scheduling.clock import duration, show
from faultplane.scheduling.errors import ScheduleError
from faultplane.scheduling.graph import DependencyGraph
from faultplane.scheduling.model import Experiment, Run, Wait
from faultplane.scheduling.windows import Blackout, parse_blackout


@dataclass(frozen=True)
class Policy:
    """Server policy: the FIS cool-down (at most one experiment started per service per
    `cooldown`), concurrency caps per service and fleet-wide, the dependency graph, the
    blackouts, and the freeze. None: no such limit."""

    cooldown: timedelta | None = None
    max_per_service: int | None = None
    max_fleet: int | None = None
    graph: DependencyGraph = field(default_factory=DependencyGraph)
    blackouts: tuple[Blackout, ...] = ()
    frozen: bool = False


@dataclass(frozen=True)
class Situation:
    """What a rule sees: the clock, the runs (started or about to), and when each service
    last had an experiment started (the cool-down's memory, kept across runs)."""

    now: datetime
    runs: tuple[Run, ...]
    last_started: Mapping[str, datetime]


def conflict(a: Experiment, b: Experiment, graph: DependencyGraph) -> str | None:
    """Why a and b may not run at the same time, or None. Symmetric in what it decides.

    Same (sidecar, scope) slot: the plane has one fault per sidecar and scope. Services
    on one request path: their verdicts confound each other, unless both allow it."""
    shared = sorted(a.footprint.slots & b.footprint.slots)
    if shared:
        return f"same sidecar {shared[0][0]}, same scope"
    if a.allow_dependent and b.allow_dependent:
        return None
    pair = graph.path_pair(a.footprint.services, b.footprint.services)
    if pair is None:
        return None
    ours, theirs = pair
    if graph.depends_on(ours, theirs):
        return f"{ours} depends on {theirs}: same request path"
    return f"{theirs} depends on {ours}: same request path"


Rule = Callable[[Experiment, Situation, Policy], Wait | None]


def frozen(exp: Experiment, now: Situation, policy: Policy) -> Wait | None:
    return Wait("frozen") if policy.frozen else None


def not_before(exp: Experiment, now: Situation, policy: Policy) -> Wait | None:
    if exp.not_before is not None and now.now < exp.not_before:
        return Wait(f"not before {show(exp.not_before)}", exp.not_before)
    return None


def calendar(exp: Experiment, now: Situation, policy: Policy) -> Wait | None:
    """Its windows and the blackouts: the whole run must fit."""
    if not exp.windows and not policy.blackouts:
        return None
    fit = earliest_fit(now.now, exp.duration, exp.windows, policy.blackouts)
    if fit.start == now.now:
        return None
    return Wait(fit.reason, fit.start)


def cooldown(exp: Experiment, now: Situation, policy: Policy) -> Wait | None:
    if policy.cooldown is None:
        return None
    for service in sorted(exp.footprint.services):
        last = now.last_started.get(service)
        if last is not None and now.now < last + policy.cooldown:
            until = last + policy.cooldown
            return Wait(f"cool-down of {service} until {show(until)}", until)
    return None


def conflicts(exp: Experiment, now: Situation, policy: Policy) -> Wait | None:
    """Same slot or same request path as a run (the one that ends first is named)."""
    for run in sorted(now.runs, key=lambda r: (r.ends_at, r.id)):
        why = conflict(exp, run.experiment, policy.graph)
        if why is not None:
            return Wait(f"waits for {run.id} ({why})", run.ends_at, (run.id,))
    return None


def _full(runs: Sequence[Run], limit: int, what: str) -> Wait | None:
    if len(runs) < limit:
        return None
    ordered = sorted(runs, key=lambda r: (r.ends_at, r.id))
    ids = tuple(r.id for r in ordered)
    return Wait(f"{what}: {len(runs)} of {limit} running", ordered[0].ends_at, ids)


def per_service(exp: Experiment, now: Situation, policy: Policy) -> Wait | None:
    if policy.max_per_service is None:
        return None
    for service in sorted(exp.footprint.services):
        on = [r for r in now.runs if service in r.experiment.footprint.services]
        wait = _full(on, policy.max_per_service, f"limit for {service}")
        if wait is not None:
            return wait
    return None


def fleet(exp: Experiment, now: Situation, policy: Policy) -> Wait | None:
    if policy.max_fleet is None:
        return None
    return _full(now.runs, policy.max_fleet, "fleet-wide limit")


# In the order a waiting experiment reports the first that objects.
RULES: tuple[Rule, ...] = (frozen, not_before, calendar, cooldown, conflicts, per_service, fleet)


def why_waits(
    exp: Experiment, now: Situation, policy: Policy, rules: Sequence[Rule] = RULES
) -> Wait | None:
    """The first objection of any rule, or None: it may start now. (`rules`: the bench
    replays weaker rule sets through the same code.)"""
    for rule in rules:
        wait = rule(exp, now, policy)
        if wait is not None:
            return wait
    return None


def _limit(value: object, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ScheduleError(field, f"must be a whole number >= 1, got {value!r}")
    return value


def parse_policy(data: Mapping[str, Any], graph: DependencyGraph | None = None) -> Policy:
    """{"cooldown": "1h", "max_per_service": 1, "max_fleet": 10, "blackouts": [...]}."""
    known = {"cooldown", "max_per_service", "max_fleet", "blackouts"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ScheduleError(unknown[0], f"unknown field (known: {', '.join(sorted(known))})")
    cool = data.get("cooldown")
    blackouts = data.get("blackouts") or []
    if not isinstance(blackouts, list):
        raise ScheduleError("blackouts", "expected a list of blackouts")
    return Policy(
        cooldown=None if cool is None else duration(cool, "cooldown"),
        max_per_service=_limit(data.get("max_per_service"), "max_per_service"),
        max_fleet=_limit(data.get("max_fleet"), "max_fleet"),
        graph=graph or DependencyGraph(),
        blackouts=tuple(parse_blackout(b, f"blackouts[{i}]") for i, b in enumerate(blackouts)),
    )
