"""The validated, immutable description of an injection.

The API edge builds these from requests (faultplane.api.validate); everything behind it
(scheduler, rendering) trusts them and never re-checks.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from faultplane.model.selector import Selector

if TYPE_CHECKING:
    from faultplane.model.pattern import Pattern
    from faultplane.scheduling.windows import Window


@dataclass(frozen=True)
class Match:
    """Narrows a fault to some requests; empty means every request in scope."""

    path_prefix: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    methods: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.path_prefix or self.headers or self.methods)


@dataclass(frozen=True)
class Scope:
    """Which traffic of a sidecar: inbound (upstream None) or calls to one dependency."""

    upstream: str | None = None
    match: Match = field(default_factory=Match)


@dataclass(frozen=True)
class TargetSpec:
    service: str
    selector: Selector
    max_pods: int
    scope: Scope
    # Only sidecars of this namespace (overlay mode: from node metadata); None: any.
    namespace: str | None = None


@dataclass(frozen=True)
class FaultSpec:
    """`kind` is the spec of a registered fault kind (faultplane.faults: Latency, Abort,
    Bandwidth...), a frozen dataclass; the model does not know the kinds, so that adding
    one touches only its own module."""

    kind: Hashable
    percentage: float = 100.0
    max_active: int | None = None
    # How the share faulted changes over the run (faultplane.model.pattern); None: constant.
    pattern: Pattern | None = None


@dataclass(frozen=True)
class SteadyStateSpec:
    slo: str
    min: float
    abort_after_seconds: float
    compare: str = ""


@dataclass(frozen=True)
class Part:
    """One fault of an experiment on its own target (max_pods applies per part)."""

    target: TargetSpec
    fault: FaultSpec


@dataclass(frozen=True)
class QueueTerms:
    """When an experiment may start and what happens when it cannot start now.

    `on_conflict`: "refuse" (the default: an overlap is FAILED_PRECONDITION, as before
    the queue existed) or "queue" (it waits QUEUED until the overlap ends). A future
    `not_before` queues it whatever `on_conflict` says; `not_after` (exclusive, epoch
    seconds) is its deadline to start, else EXPIRED. `windows`: when it may run (none:
    any time); `allow_dependent`: exempt from the dependency rule against another
    experiment that allows it too."""

    on_conflict: str = "refuse"
    priority: int = 0
    not_before: float | None = None
    not_after: float | None = None
    windows: tuple[Window, ...] = ()
    allow_dependent: bool = False


@dataclass(frozen=True)
class InjectionSpec:
    """`target` and `fault` are the first part (the only one of a single-fault request);
    `more` the parts after it. Whatever acts on faults goes through `parts`."""

    target: TargetSpec
    fault: FaultSpec
    duration_seconds: float
    steady_state: SteadyStateSpec
    hypothesis: str
    owner: str
    more: tuple[Part, ...] = ()
    queue: QueueTerms = QueueTerms()

    @property
    def parts(self) -> tuple[Part, ...]:
        return (Part(self.target, self.fault), *self.more)

    @property
    def services(self) -> frozenset[str]:
        """Every service a part targets."""
        return frozenset(part.target.service for part in self.parts)


def part_id(injection_id: str, index: int) -> str:
    """The id part `index` is delivered under (its runtime keys, its slots): the bare
    injection id for the first part, so a single-fault injection's keys and stored data
    stay as they were; `<id>.<index>` for the others (injection ids hold no dot)."""
    return injection_id if index == 0 else f"{injection_id}.{index}"


def injection_of(assignment_id: str) -> str:
    """The injection a part id (see `part_id`) belongs to."""
    return assignment_id.split(".", 1)[0]
