"""An injection as the scheduler owns it: its spec, targets, state and history.

Every state change goes through `Injection.transition`, which enforces the state machine:

    QUEUED -> PENDING | PENDING_APPROVAL | ABORTED | EXPIRED
                                                 (waits for its not_before or for a
                                                  conflicting experiment to end)
    PENDING_APPROVAL -> PENDING | ABORTED        (two-person rule; expiry aborts)
    PENDING -> ACTIVE -> COMPLETED | ABORTED | FAILED
    PENDING -> ABORTED | FAILED
    ACTIVE -> ACTIVE                             (resumed after a control-server outage:
                                                  the history shows the gap; the deadline
                                                  does not move)
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from faultplane.model.spec import InjectionSpec, Part, part_id


class State(enum.Enum):
    PENDING_APPROVAL = "PENDING_APPROVAL"
    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    COMPLETED = "COMPLETED"
    ABORTED = "ABORTED"
    FAILED = "FAILED"
    QUEUED = "QUEUED"
    EXPIRED = "EXPIRED"

    @property
    def live(self) -> bool:
        return self in (State.QUEUED, State.PENDING_APPROVAL, State.PENDING, State.ACTIVE)


ALLOWED = {
    State.QUEUED: {State.PENDING, State.PENDING_APPROVAL, State.ABORTED, State.EXPIRED},
    State.PENDING_APPROVAL: {State.PENDING, State.ABORTED},
    State.PENDING: {State.ACTIVE, State.ABORTED, State.FAILED},
    State.ACTIVE: {State.ACTIVE, State.COMPLETED, State.ABORTED, State.FAILED},
}


class IllegalTransition(RuntimeError):
    pass


@dataclass(frozen=True)
class Evidence:
    """One sidecar's answer to one push: acked, nacked, timeout or disconnected."""

    sidecar: str
    type: str  # rds | rtds
    version: str
    outcome: str
    error: str = ""
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class SloReading:
    """One tick of the steady-state guard for one injection."""

    at: float
    value: float | None
    breach: bool
    breach_seconds: float
    error: str = ""
    control_value: float | None = None  # compare mode: the unfaulted sidecars' value


@dataclass(frozen=True)
class Transition:
    from_state: State | None
    to_state: State
    at: float
    reason: str
    evidence: tuple[Evidence, ...] = ()


@dataclass
class Injection:
    id: str
    spec: InjectionSpec
    targets: tuple[str, ...]
    matched: tuple[str, ...]
    # The request as the operator wrote it (JSON field names), for display and records.
    document: Mapping[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    state: State = State.PENDING
    reason: str = "accepted, pushing to targets"
    activated_at: float | None = None
    ends_at: float | None = None
    ended_at: float | None = None
    transitions: list[Transition] = field(default_factory=list)
    readings: list[SloReading] = field(default_factory=list)
    # "hypothesis held" (deadline reached without a breach), "hypothesis refuted" (the
    # guard aborted it), or "inconclusive: ..." (ended otherwise); empty while live.
    verdict: str = ""
    # When the breach that aborted it had lasted abort_after (wall clock).
    breach_limit_at: float | None = None
    # Set (and persisted) once its end is decided, before the withdrawal: a restart
    # mid-withdrawal finishes the decided end instead of resuming the fault.
    ending: tuple[State, str, str] | None = None  # state, reason, verdict
    approved_by: str = ""
    # Per part of a multi-fault spec, the sidecars that part chose (`targets` is their
    # union); empty for a single fault, whose part has `targets`.
    part_targets: tuple[tuple[str, ...], ...] = ()

    @property
    def waiting_reason(self) -> str:
        """Why a QUEUED injection does not start now (its state's reason); else empty."""
        return self.reason if self.state is State.QUEUED else ""

    def __post_init__(self) -> None:
        if not self.transitions:
            self.transitions.append(Transition(None, self.state, self.created_at, self.reason))

    @property
    def owner(self) -> str:
        return self.spec.owner

    def parts(self) -> list[tuple[str, Part, tuple[str, ...]]]:
        """Every part as (its delivery id, the part, its targets)."""
        parts = self.spec.parts
        targets = self.part_targets or (self.targets,)
        return [(part_id(self.id, i), part, targets[i]) for i, part in enumerate(parts)]

    def targets_on(self, service: str) -> tuple[str, ...]:
        """The targets of its parts on `service` (empty: no part faults it), where the
        guard reads that service's SLO."""
        return tuple(dict.fromkeys(
            node for _, part, nodes in self.parts() if part.target.service == service
            for node in nodes
        ))  # fmt: skip

    def transition(
        self,
        to_state: State,
        reason: str,
        evidence: tuple[Evidence, ...] = (),
        switched_on_at: float | None = None,
    ) -> Transition:
        """`switched_on_at`: when an injection turning ACTIVE had its fault switched on
        (default: now); its deadline counts from there."""
        if to_state not in ALLOWED.get(self.state, set()):
            raise IllegalTransition(f"{self.id}: {self.state.value} -> {to_state.value}")
        now = time.time()
        was = self.state
        change = Transition(was, to_state, now, reason, evidence)
        self.transitions.append(change)
        self.state, self.reason = to_state, reason
        if to_state is State.ACTIVE and was is not State.ACTIVE:
            self.activated_at = switched_on_at if switched_on_at is not None else now
            self.ends_at = self.activated_at + self.spec.duration_seconds
        elif not to_state.live:
            self.ended_at = now
        return change
