"""What the scheduler reasons about, abstracted from injections so it can be fed later.

A queued experiment is described by its footprint (the services it targets, and the
(sidecar, traffic scope) slots it would occupy: the same pair the admission check
refuses to share today), its length and its timing constraints. The real server builds
these from injection specs and the store; the packer, the rules, the tests and the bench
all work on this description only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from faultplane.scheduling.windows import Window

Slot = tuple[str, str]  # (sidecar id, traffic scope key)


@dataclass(frozen=True)
class Footprint:
    """Where an experiment acts: its target services and (sidecar, scope) slots."""

    services: frozenset[str]
    slots: frozenset[Slot] = frozenset()


@dataclass(frozen=True)
class Experiment:
    """A queued experiment. `not_after` is the deadline to start (exclusive): at that
    instant a still-waiting experiment is EXPIRED. `allow_dependent` exempts a pair from
    the dependency rule only when both say so, since both verdicts would be confounded."""

    id: str
    footprint: Footprint
    duration: timedelta
    submitted_at: datetime
    priority: int = 0
    not_before: datetime | None = None
    not_after: datetime | None = None
    windows: tuple[Window, ...] = ()
    allow_dependent: bool = False


@dataclass(frozen=True)
class Run:
    """An experiment that has started; it is planned to end at `ends_at`."""

    experiment: Experiment
    started_at: datetime

    @property
    def ends_at(self) -> datetime:
        return self.started_at + self.experiment.duration

    @property
    def id(self) -> str:
        return self.experiment.id


@dataclass(frozen=True)
class Wait:
    """Why a queued experiment does not start now. `until`: when this block lifts by the
    clock alone, or when the blocking run is planned to end (None: not by the clock, e.g.
    frozen); the packer re-plans then. `blockers`: ids of the runs in the way."""

    reason: str
    until: datetime | None = None
    blockers: tuple[str, ...] = ()
