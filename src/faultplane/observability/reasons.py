"""A transition's reason as one word of a small, closed set: a metric label, an event.

A transition's `reason` is free text (it names sidecars, principals, SLO values), so it
can never be a label: every distinct text would be a new time series. `reason_kind`
maps it, with the verdict and the evidence, onto `REASON_KINDS`, which is all a
dashboard, an alert rule or a notification needs to branch on.
"""

from __future__ import annotations

from faultplane.model.injection import Injection, State, Transition

# Every value `reason_kind` returns; nothing else ever becomes a label.
REASON_KINDS = (
    "created",  # admitted (PENDING, or PENDING_APPROVAL under the two-person rule)
    "approved",  # a second person approved it
    "activated",  # every target ACKed the fault switched on
    "resumed",  # ACTIVE again after a control-server restart
    "pattern",  # a pattern switched the fault on or off (ACTIVE -> ACTIVE)
    "deadline",  # its duration ran out: COMPLETED
    "guard",  # the steady-state guard aborted it (hypothesis refuted)
    "operator",  # an operator aborted it
    "expired",  # nobody approved it in time, or it was still QUEUED at its not_after
    "queued",  # created QUEUED, or started from the queue (QUEUED -> PENDING...)
    "nack",  # a sidecar rejected the fault: FAILED
    "timeout",  # a sidecar did not answer in time (or went away): FAILED
    "restart",  # ended by a control-server restart (rolled back, target no longer fits)
    "failure",  # any other end (an internal error)
)

# The verdicts faultplane.lifecycle.lifecycle sets; repeated here as text so that this
# leaf does not import the lifecycle.
_REFUTED = "hypothesis refuted"
_OPERATOR = "inconclusive: aborted by an operator"


def reason_kind(injection: Injection, change: Transition) -> str:
    """The member of REASON_KINDS that says why `change` happened."""
    to, was, reason = change.to_state, change.from_state, change.reason
    if was is None:
        return "queued" if to is State.QUEUED else "created"
    if was is State.QUEUED and to in (State.PENDING, State.PENDING_APPROVAL):
        return "queued"
    if to is State.EXPIRED:
        return "expired"
    if to is State.PENDING:
        return "approved"
    if to is State.ACTIVE:
        if was is not State.ACTIVE:
            return "activated"
        # A pattern's switch reads "<kind>: on at 30% (switch 2)"; a resume names the
        # restart (faultplane.lifecycle.uptime.outage_reason).
        return "resumed" if "restart" in reason or "resumed" in reason else "pattern"
    if to is State.COMPLETED:
        return "deadline"  # at a restart too: past its deadline, the lease ended it
    # An end decided before a crash and finished by the next server keeps its verdict.
    if to is State.ABORTED and injection.verdict == _REFUTED:
        return "guard"
    if to is State.ABORTED and injection.verdict == _OPERATOR:
        return "operator"
    if reason.startswith("approval expired"):
        return "expired"
    outcomes = {evidence.outcome for evidence in change.evidence}
    if "nacked" in outcomes or " nacked " in reason:
        return "nack"
    if (
        outcomes & {"timeout", "disconnected"}
        or " timeout " in reason
        or " disconnected " in reason
    ):
        return "timeout"
    if "restart" in reason:
        return "restart"
    return "failure"


# The (to state, reason kind) pairs transitions can take: the series
# `faultplane_injection_transitions_total` reports from the start, at 0 until one happens,
# so that an alert's `increase(...)` sees the first one.
TRANSITION_PAIRS = (
    ("PENDING", "created"),
    ("QUEUED", "queued"),
    ("PENDING", "queued"),
    ("PENDING_APPROVAL", "queued"),
    ("EXPIRED", "expired"),
    ("PENDING_APPROVAL", "created"),
    ("PENDING", "approved"),
    ("ACTIVE", "activated"),
    ("ACTIVE", "resumed"),
    ("COMPLETED", "deadline"),
    ("ABORTED", "guard"),
    ("ABORTED", "operator"),
    ("ABORTED", "expired"),
    ("FAILED", "nack"),
    ("FAILED", "timeout"),
    ("FAILED", "failure"),
    ("ABORTED", "restart"),
    ("FAILED", "restart"),
)
