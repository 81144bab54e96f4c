"""The validated, immutable description of an injection.

The API edge builds these from requests (faultplane.api.validate); everything behind it
(scheduler, rendering) trusts them and never re-checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from faultplane.model.selector import Selector


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

    @property
    def direction(self) -> str:
        return "inbound" if self.upstream is None else "outbound"


@dataclass(frozen=True)
class TargetSpec:
    service: str
    selector: Selector
    max_pods: int
    scope: Scope


@dataclass(frozen=True)
class Latency:
    """A delay: fixed (p99 None), or a distribution whose p50 and p99 are given."""

    p50_ms: float
    p99_ms: float | None = None


@dataclass(frozen=True)
class Abort:
    http_status: int | None = None
    grpc_status: int | None = None


@dataclass(frozen=True)
class Bandwidth:
    kbps: int


FaultKind = Latency | Abort | Bandwidth


@dataclass(frozen=True)
class FaultSpec:
    kind: FaultKind
    percentage: float = 100.0
    max_active: int | None = None


@dataclass(frozen=True)
class SteadyStateSpec:
    slo: str
    min: float
    abort_after_seconds: float
    compare: str = ""


@dataclass(frozen=True)
class InjectionSpec:
    target: TargetSpec
    fault: FaultSpec
    duration_seconds: float
    steady_state: SteadyStateSpec
    hypothesis: str
    owner: str
