"""The seam between the registry of injections and the pure packer.

The scheduler re-plans the queue from what memory holds alone (every live injection is
in memory, QUEUED ones included, and a restart reloads them all), so this module only
translates: injections into the packer's `Experiment`s and `Run`s, epoch seconds into
aware datetimes and back. The decision itself is `faultplane.scheduling.packer.plan`, the
same function the property tests and the bench judge.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta

from faultplane.model.injection import Injection, State
from faultplane.scheduling.feed import footprint_of_injection
from faultplane.scheduling.model import Experiment, Footprint, Run
from faultplane.scheduling.packer import State as QueueState

FootprintOf = Callable[[Injection], Footprint]  # a queued injection's, as admission would
# A queue forecast never looks further than this (`faultplane queue`).
HORIZON = timedelta(days=7)


def instant(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def seconds(t: datetime) -> float:
    return t.timestamp()


def experiment(injection: Injection, footprint: Footprint) -> Experiment:
    terms = injection.spec.queue
    return Experiment(
        injection.id,
        footprint,
        timedelta(seconds=injection.spec.duration_seconds),
        instant(injection.created_at),
        terms.priority,
        None if terms.not_before is None else instant(terms.not_before),
        None if terms.not_after is None else instant(terms.not_after),
        terms.windows,
        terms.allow_dependent,
    )


def queue_state(
    injections: Iterable[Injection],
    now: float,
    queued_footprint: FootprintOf,
    last_started: Mapping[str, datetime] | None = None,
) -> QueueState:
    """The packer's state: live injections run (planned to end at their deadline, or a
    full duration from now while they are still being switched on), QUEUED ones wait."""
    running: list[Run] = []
    queue: list[Experiment] = []
    for injection in injections:
        if injection.state is State.QUEUED:
            queue.append(experiment(injection, queued_footprint(injection)))
        elif injection.state.live:
            started = injection.activated_at if injection.activated_at is not None else now
            running.append(Run(experiment(injection, footprint_of_injection(injection)),
                               instant(started)))  # fmt: skip
    running.sort(key=lambda r: r.id)
    queue.sort(key=lambda e: e.id)
    return QueueState(instant(now), tuple(running), tuple(queue), dict(last_started or {}))
