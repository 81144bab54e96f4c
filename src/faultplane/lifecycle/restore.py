"""What a restarted control server does with each injection that was live at the crash.

A pure decision, so every case is testable without a crash:
- its end was already decided (the crash hit the withdrawal): finish that end;
- PENDING (pushing when the server died): roll back; the lease has cleared whatever was
  switched on, and the new server serves no fault;
- PENDING_APPROVAL: nothing was applied; keep waiting for approval;
- ACTIVE and due: resume for the time left;
- ACTIVE and past its deadline: completed during the outage (the lease ended it);
- live, but its target no longer fits today's mesh: ended (nothing of it is put back).

A resumed injection's history then tells the outage (`faultplane.lifecycle.uptime`).
"""

from __future__ import annotations

from dataclasses import dataclass

from faultplane.lifecycle.records import SpecParser
from faultplane.model.injection import Injection, State


@dataclass(frozen=True)
class Resume:
    remaining: float


@dataclass(frozen=True)
class Finish:
    state: State
    reason: str
    verdict: str


def restore_decision(
    injection: Injection, now: float, parse_spec: SpecParser | None = None
) -> Resume | Finish | None:
    """None: leave it as it is (waiting for approval). With `parse_spec`, one that would
    resume or keep waiting is first checked against today's mesh."""
    decision = _by_state(injection, now)
    if parse_spec is None or isinstance(decision, Finish):
        return decision
    try:
        parse_spec(injection.document, True)
    except Exception as exc:
        return no_longer_fits(injection, exc)
    return decision


def no_longer_fits(injection: Injection, exc: Exception) -> Finish:
    return Finish(
        State.ABORTED if injection.state is State.PENDING_APPROVAL else State.FAILED,
        f"its target no longer fits the mesh after a restart: {exc}",
        "inconclusive: the target changed during a control-server restart",
    )


def _by_state(injection: Injection, now: float) -> Resume | Finish | None:
    if injection.ending is not None:
        state, reason, verdict = injection.ending
        return Finish(state, f"{reason} (finished after a control-server restart)", verdict)
    if injection.state is State.PENDING_APPROVAL:
        return None
    if injection.state is State.PENDING:
        return Finish(
            State.FAILED,
            "control server restarted before every target acknowledged the fault; rolled back",
            "inconclusive: the fault never took effect",
        )
    assert injection.state is State.ACTIVE and injection.ends_at is not None
    if injection.ends_at > now:
        return Resume(injection.ends_at - now)
    return Finish(
        State.COMPLETED,
        "deadline passed during control-server outage",
        "inconclusive: the control server was down at the deadline",
    )
