"""Injections as JSON documents for the store, and back.

The store keeps opaque bodies; this module is the one place that decides their shape.
An injection's spec is kept as the operator's request document and re-validated on load
(by the caller's `parse_spec`), so the stored form never drifts from the API's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from faultplane.model.injection import Evidence, Injection, SloReading, State, Transition
from faultplane.model.readings import bound_readings
from faultplane.model.spec import InjectionSpec
from faultplane.store import InjectionRecord, StoredInjection

# (request document, strict) -> spec; strict checks it against today's mesh and raises
# when it no longer fits, not strict trusts the names it was accepted with.
SpecParser = Callable[[Mapping[str, Any], bool], InjectionSpec]


def injection_body(injection: Injection) -> dict[str, Any]:
    return {
        "id": injection.id,
        "document": dict(injection.document),
        "targets": list(injection.targets),
        "matched": list(injection.matched),
        "state": injection.state.value,
        "reason": injection.reason,
        "created_at": injection.created_at,
        "activated_at": injection.activated_at,
        "ends_at": injection.ends_at,
        "ended_at": injection.ended_at,
        "verdict": injection.verdict,
        "breach_limit_at": injection.breach_limit_at,
        "ending": [injection.ending[0].value, *injection.ending[1:]] if injection.ending else None,
        "approved_by": injection.approved_by,
        # Only for several parts: a single fault's record keeps its old shape.
        **({"part_targets": [list(t) for t in injection.part_targets]}
           if injection.part_targets else {}),
    }  # fmt: skip


def injection_record(injection: Injection) -> InjectionRecord:
    """What the store keeps of an injection: the columns it is listed by, and its body."""
    return InjectionRecord(
        injection.id,
        injection.state.value,
        injection.spec.target.service,
        injection.created_at,
        injection_body(injection),
    )


def transition_body(transition: Transition) -> dict[str, Any]:
    return {
        "from": transition.from_state.value if transition.from_state else None,
        "to": transition.to_state.value,
        "at": transition.at,
        "reason": transition.reason,
        "evidence": [evidence_body(e) for e in transition.evidence],
    }


def evidence_body(evidence: Evidence) -> dict[str, Any]:
    return {
        "sidecar": evidence.sidecar,
        "type": evidence.type,
        "version": evidence.version,
        "outcome": evidence.outcome,
        "error": evidence.error,
        "at": evidence.at,
    }


def reading_body(reading: SloReading) -> dict[str, Any]:
    return {
        "value": reading.value,
        "breach": reading.breach,
        "breach_seconds": reading.breach_seconds,
        "error": reading.error,
        "control_value": reading.control_value,
    }


def injection_from_record(
    stored: StoredInjection,
    readings: list[tuple[float, dict[str, Any]]],
    parse_spec: SpecParser,
    strict: bool,
) -> Injection:
    """An injection back from its stored record; its readings bounded as in memory (see
    `faultplane.model.readings`)."""
    body = stored.body
    ending = body.get("ending")
    spec = parse_spec(body["document"], strict)
    kept = [SloReading(at=at, **reading) for at, reading in readings]
    bound_readings(kept, spec.steady_state.abort_after_seconds, body.get("activated_at"))
    return Injection(
        id=stored.id,
        spec=spec,
        targets=tuple(body["targets"]),
        matched=tuple(body["matched"]),
        document=body["document"],
        created_at=body["created_at"],
        state=State(body["state"]),
        reason=body["reason"],
        activated_at=body.get("activated_at"),
        ends_at=body.get("ends_at"),
        ended_at=body.get("ended_at"),
        transitions=[_transition(t.body) for t in stored.transitions],
        readings=kept,
        verdict=body.get("verdict", ""),
        breach_limit_at=body.get("breach_limit_at"),
        ending=(State(ending[0]), ending[1], ending[2]) if ending else None,
        approved_by=body.get("approved_by", ""),
        part_targets=tuple(tuple(t) for t in body.get("part_targets", ())),
    )


def _transition(body: Mapping[str, Any]) -> Transition:
    return Transition(
        from_state=State(body["from"]) if body["from"] else None,
        to_state=State(body["to"]),
        at=body["at"],
        reason=body["reason"],
        evidence=tuple(Evidence(**e) for e in body["evidence"]),
    )
