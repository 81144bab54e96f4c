"""What a restarted control server does with each injection that was live at the crash.

`restore_live` reloads them from the store and carries out, for each, a pure decision
(`restore_decision`, so every case is testable without a crash):
- its end was already decided (the crash hit the withdrawal): finish that end;
- PENDING (pushing when the server died): roll back; the lease has cleared whatever was
  switched on, and the new server serves no fault;
- PENDING_APPROVAL: nothing was applied; keep waiting for approval;
- ACTIVE and due: resume for the time left;
- ACTIVE and past its deadline: completed during the outage (the lease ended it);
- live, but its target no longer fits today's mesh: ended (nothing of it is put back).

A resumed injection's history then tells the outage (`faultplane.lifecycle.uptime`).
Finished injections stay in the store, found there on demand.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from faultplane.delivery.plane import Delivery, SlotsExhausted
from faultplane.lifecycle.journal import Journal
from faultplane.lifecycle.lifecycle import LEASE_GRACE_SECONDS, NEVER_TOOK_EFFECT, Transitions
from faultplane.lifecycle.pattern import level_at
from faultplane.lifecycle.records import SpecParser, injection_from_record
from faultplane.lifecycle.registry import InjectionRegistry
from faultplane.lifecycle.uptime import ServerRun, outage_reason
from faultplane.model.injection import Injection, State
from faultplane.render.faults import FaultAssignment
from faultplane.store import StoredInjection

log = structlog.get_logger("faultplane.scheduler")
LIVE_STATES = tuple(state.value for state in State if state.live)

# Runs a restored injection's lifecycle: (injection, seconds to its deadline if it
# resumes ACTIVE, None while it waits for approval).
Start = Callable[[Injection, float | None], object]
# With replicas: whether this replica takes the injection's lease (faultplane.replicas).
Claim = Callable[[str], Awaitable[bool]]


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
        return _no_longer_fits(injection, exc)
    return decision


async def restore_live(
    parse_spec: SpecParser,
    previous: ServerRun | None,
    *,
    journal: Journal,
    registry: InjectionRegistry,
    delivery: Delivery,
    transitions: Transitions,
    start: Start,
    claim: Claim | None = None,
) -> None:
    """Reload every injection the store holds as live into `registry`: resume the ones
    still due (recording the outage `previous`, the last server's run, put them through:
    an ACTIVE -> ACTIVE transition saying when the fault was off), keep the ones waiting
    for approval waiting, finish the rest (their faults already went with the lease).
    With `claim` (replicas), only those whose lease this replica takes."""
    store = journal.store
    for stored in await journal.read(store.injections.load, LIVE_STATES):
        if claim is not None and not await claim(stored.id):
            continue  # another replica owns it
        readings = await journal.read(store.readings.load, stored.id)
        restore_one(
            stored, readings, parse_spec, previous, registry=registry, delivery=delivery,
            transitions=transitions, start=start,
        )  # fmt: skip


def restore_one(
    stored: StoredInjection,
    readings: list[tuple[float, dict[str, Any]]],
    parse_spec: SpecParser,
    previous: ServerRun | None,
    *,
    registry: InjectionRegistry,
    delivery: Delivery,
    transitions: Transitions,
    start: Start,
    reason: str | None = None,
) -> None:
    """`restore_live` for one stored injection: at a restart, or when a replica takes
    it over from one that died (`reason` then says so in its ACTIVE -> ACTIVE)."""
    try:
        injection = injection_from_record(stored, readings, parse_spec, strict=False)
    except Exception:
        # Unreadable: nothing of it can be put back (its lease has ended whatever
        # was on); the server starts for everything else.
        log.exception("cannot reload a stored injection; left as it is", id=stored.id)
        return
    registry.add(injection)
    if not injection.state.live or injection.state is State.QUEUED:
        return  # the scheduler re-plans the queue once everything is back
    now = time.time()
    decision = restore_decision(injection, now, parse_spec)
    if not isinstance(decision, Finish):
        decision = _put_back(injection, decision, delivery) or decision
    if isinstance(decision, Finish):
        # Recorded in the background, retried: the start goes on.
        transitions.make(injection, decision.state, decision.reason, verdict=decision.verdict)
        registry.retire(injection)
        return
    remaining = None
    if isinstance(decision, Resume):
        remaining = decision.remaining
        why = reason or outage_reason(previous, injection, now, remaining)
        transitions.make(injection, State.ACTIVE, why)
    start(injection, remaining)


def _put_back(injection: Injection, decision: Resume | None, delivery: Delivery) -> Finish | None:
    """Put a resumed injection back in its targets' desired state, or reserve the slots
    of one waiting for approval; a Finish if its targets can no longer carry it."""
    spec = injection.spec
    try:
        if decision is None:
            for key, part, nodes in injection.parts():
                armed = FaultAssignment(key, part.fault, part.target.scope, False)
                delivery.reserve(nodes, key, armed)
        else:
            # Back in every target's desired state before any sidecar reconnects.
            log.info("resuming injection", injection=injection.id, left_s=decision.remaining)
            delivery.lease(
                injection.id, time.monotonic() + decision.remaining + LEASE_GRACE_SECONDS
            )
            # At the pattern's level for now (a burst may be in an off phase), not full.
            elapsed = time.time() - (injection.activated_at or time.time())
            for key, part, nodes in injection.parts():
                level = level_at(part.fault, elapsed, spec.duration_seconds)
                fault = FaultAssignment(key, part.fault, part.target.scope, True, level)
                delivery.place(nodes, key, fault)
    except (KeyError, SlotsExhausted) as exc:
        delivery.drop(injection.id)
        return _no_longer_fits(injection, exc)
    return None


def _no_longer_fits(injection: Injection, exc: Exception) -> Finish:
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
            NEVER_TOOK_EFFECT,
        )
    assert injection.state is State.ACTIVE and injection.ends_at is not None
    if injection.ends_at > now:
        return Resume(injection.ends_at - now)
    return Finish(
        State.COMPLETED,
        "deadline passed during control-server outage",
        "inconclusive: the control server was down at the deadline",
    )
