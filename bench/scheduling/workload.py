"""The simulated fleet and queue: a layered 30-service graph and 200 random experiments.

Seeded, so a run is reproducible and the strategies face the same queue. Shapes follow
what teams submit: mostly one target service, one to three of its three sidecars,
inbound or towards one dependency, 5-60 minutes, some with office-hours windows in the
team's zone, some not before a date or with a deadline; a server-wide weekend blackout
and a month-end settlement. Every time is a whole minute (the checker relies on it).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from faultplane.scheduling.graph import DependencyGraph
from faultplane.scheduling.model import Experiment, Footprint
from faultplane.scheduling.rules import Policy
from faultplane.scheduling.windows import Window, parse_blackout, parse_window

LAYERS: tuple[tuple[str, ...], ...] = (
    ("web-frontend", "mobile-bff", "partner-api", "admin-ui", "search-api"),
    ("checkout", "cart", "catalog", "user-profile", "recommendations", "notifications"),
    ("payments-api", "orders", "inventory", "pricing", "shipping", "reviews", "auth"),
    ("fraud-scoring", "ledger", "tax", "warehouse", "email-sender", "sessions"),
    ("postgres-proxy", "redis-cache", "kafka-gateway", "s3-gateway", "feature-store", "ml-models"),
)
PODS = 3
START = datetime(2026, 11, 23, tzinfo=UTC)  # a Monday; no DST change for weeks
ZONES = ("Europe/Berlin", "America/New_York", "Asia/Kolkata")


@dataclass(frozen=True)
class Workload:
    """One simulated situation: when it starts, the policy (with the graph) and the queue."""

    start: datetime
    policy: Policy
    queue: tuple[Experiment, ...]

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(s for layer in LAYERS for s in layer)


def graph(rnd: random.Random, layers: tuple[tuple[str, ...], ...] = LAYERS) -> DependencyGraph:
    """Each service calls one or two of the next layer and sometimes one further down."""
    edges = []
    for depth, layer in enumerate(layers[:-1]):
        for service in layer:
            for callee in rnd.sample(layers[depth + 1], rnd.choice((1, 2))):
                edges.append((service, callee))
            if depth + 2 < len(layers) and rnd.random() < 0.3:
                edges.append((service, rnd.choice(layers[depth + 2])))
    return DependencyGraph.of(edges)


def _windows(rnd: random.Random) -> tuple[Window, ...]:
    zone = rnd.choice(ZONES)
    draw = rnd.random()
    if draw < 0.4:
        return ()
    if draw < 0.8:
        return (parse_window({"weekdays": "Mon-Fri", "hours": "09:00-17:00", "tz": zone}),)
    return (parse_window({"weekdays": "Mon-Sun", "hours": "06:00-22:00", "tz": zone}),)


def experiment(rnd: random.Random, index: int, dependencies: DependencyGraph) -> Experiment:
    services = [s for layer in LAYERS for s in layer]
    targets = rnd.sample(services, 2 if rnd.random() < 0.1 else 1)
    slots = set()
    for service in targets:
        callees = sorted(dependencies.calls.get(service, ()))
        scope = "inbound"
        if callees and rnd.random() < 0.3:
            scope = f"upstream:{rnd.choice(callees)}"
        pods = rnd.sample(range(PODS), rnd.randint(1, PODS))
        slots.update((f"{service}-{p}", scope) for p in pods)
    minute = timedelta(minutes=1)
    not_before = START + rnd.randrange(0, 48 * 60) * minute if rnd.random() < 0.2 else None
    not_after = START + rnd.randrange(6 * 60, 72 * 60) * minute if rnd.random() < 0.15 else None
    return Experiment(
        id=f"inj-{index:03d}",
        footprint=Footprint(frozenset(targets), frozenset(slots)),
        duration=rnd.randrange(5, 65, 5) * minute,
        submitted_at=START - rnd.randrange(0, 600) * minute,
        priority=rnd.choices((0, 1, 2), (7, 2, 1))[0],
        not_before=not_before,
        not_after=not_after,
        windows=_windows(rnd),
        allow_dependent=rnd.random() < 0.1,
    )


def make(seed: int, experiments: int = 200, max_fleet: int = 8) -> Workload:
    """The seeded workload: the graph, the policy and the queue."""
    rnd = random.Random(seed)
    dependencies = graph(rnd)
    blackouts = (
        parse_blackout(
            {"name": "weekend", "weekly": "Fri 16:00 - Mon 09:00", "tz": "Europe/Berlin"}
        ),
        parse_blackout({
            "name": "month-end settlement",
            "start": "2026-11-30T00:00:00+00:00",
            "end": "2026-11-30T12:00:00+00:00",
        }),
    )  # fmt: skip
    policy = Policy(
        cooldown=timedelta(hours=1),
        max_per_service=1,
        max_fleet=max_fleet,
        graph=dependencies,
        blackouts=blackouts,
    )
    queue = tuple(experiment(rnd, i, dependencies) for i in range(experiments))
    return Workload(START, policy, queue)
