"""What a notification says: one event, built from a transition or a freeze change.

An event carries what (the faults), who (owner; for an abort, the reason names who
stopped it), where (services and targets), the scheduled end, the verdict and reason,
and a link to the experiment's page on the dashboard (`serve --web-url`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from faultplane.faults.registry import kind_of
from faultplane.model.injection import Injection, State, Transition
from faultplane.model.spec import Part
from faultplane.observability.reasons import reason_kind

# Event kinds: what a receiver branches on.
STARTED, COMPLETED, GUARD_ABORT, ABORTED, FAILED = (
    "started", "completed", "guard_abort", "aborted", "failed",
)  # fmt: skip
FROZEN, UNFROZEN = "frozen", "unfrozen"
HEADLINES = {
    STARTED: "Fault injection started",
    COMPLETED: "Fault injection completed",
    GUARD_ABORT: "Guard aborted a fault injection",
    ABORTED: "Fault injection aborted",
    FAILED: "Fault injection failed",
    FROZEN: "Fault injection frozen",
    UNFROZEN: "Fault injection unfrozen",
}


@dataclass(frozen=True)
class Event:
    kind: str
    at: float
    injection_id: str = ""
    owner: str = ""
    by: str = ""  # who froze or unfroze
    state: str = ""
    services: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    faults: tuple[str, ...] = ()
    hypothesis: str = ""
    ends_at: float | None = None  # the scheduled end (an injection), the freeze's until
    verdict: str = ""
    reason: str = ""
    link: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def headline(self) -> str:
        return HEADLINES[self.kind]


def experiment_link(web_url: str | None, injection_id: str) -> str:
    """The experiment's page on the dashboard, or "" without `--web-url`."""
    return f"{web_url.rstrip('/')}/experiments/{injection_id}" if web_url else ""


def fault_text(part: Part) -> str:
    """`abort http 503 on 30% of payments-api inbound`."""
    kind = kind_of(part.fault.kind)
    upstream = part.target.scope.upstream
    where = f"calls to {upstream}" if upstream else "inbound"
    return (
        f"{kind.describe(part.fault.kind)} on {part.fault.percentage:g}% of "
        f"{part.target.service} {where}"
    )


def transition_event(injection: Injection, change: Transition, web_url: str | None) -> Event | None:
    """The event a transition is, or None for one nobody is told of (created, approved,
    resumed after a restart, a pattern's switch)."""
    kind = _kind_of(injection, change)
    if kind is None:
        return None
    spec = injection.spec
    return Event(
        kind=kind, at=change.at, injection_id=injection.id, owner=injection.owner,
        state=change.to_state.value, services=tuple(sorted(spec.services)),
        targets=injection.targets, faults=tuple(fault_text(p) for p in spec.parts),
        hypothesis=spec.hypothesis, ends_at=injection.ends_at, verdict=injection.verdict,
        reason=change.reason, link=experiment_link(web_url, injection.id),
    )  # fmt: skip


def _kind_of(injection: Injection, change: Transition) -> str | None:
    to = change.to_state
    if to is State.ACTIVE:
        return STARTED if change.from_state is not State.ACTIVE else None
    if to is State.COMPLETED:
        return COMPLETED
    if to is State.FAILED:
        return FAILED
    if to is State.ABORTED:
        return GUARD_ABORT if reason_kind(injection, change) == "guard" else ABORTED
    return None


def freeze_event(
    frozen: bool, by: str, reason: str, until: float | None, web_url: str | None
) -> Event:
    """A freeze set (`frozen`) or lifted (by an operator, or because it lapsed)."""
    return Event(
        kind=FROZEN if frozen else UNFROZEN, at=time.time(), by=by, reason=reason,
        ends_at=until, link=web_url.rstrip("/") if web_url else "",
    )  # fmt: skip
