"""Scheduler records to faultplane.v1 messages."""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf import json_format, timestamp_pb2

from faultplane.model.injection import Evidence, Injection, SloReading, State, Transition
from faultplane.slo.baseline import BaselineStats
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.xds import types
from faultplane.xds.sidecar import SidecarStatus


def injection_message(injection: Injection) -> pb.Injection:
    message = pb.Injection(
        id=injection.id,
        state=state_message(injection.state),
        reason=injection.reason,
        owner=injection.spec.owner,
        targets=injection.targets,
        matched=injection.matched,
        created_at=timestamp(injection.created_at),
        activated_at=timestamp(injection.activated_at),
        ends_at=timestamp(injection.ends_at),
        ended_at=timestamp(injection.ended_at),
        transitions=[transition_message(t) for t in injection.transitions],
        verdict=injection.verdict,
        readings=[reading_message(r) for r in injection.readings],
        breach_limit_at=timestamp(injection.breach_limit_at),
        approved_by=injection.approved_by,
        waiting_reason=injection.waiting_reason,
    )
    json_format.ParseDict(injection.document, message.request)
    return message


def transition_message(transition: Transition) -> pb.Transition:
    return pb.Transition(
        from_state=state_message(transition.from_state),
        to_state=state_message(transition.to_state),
        at=timestamp(transition.at),
        reason=transition.reason,
        evidence=[evidence_message(e) for e in transition.evidence],
    )


def reading_message(reading: SloReading) -> pb.SloReading:
    return pb.SloReading(
        at=timestamp(reading.at),
        value=reading.value,
        breach=reading.breach,
        breach_seconds=reading.breach_seconds,
        error=reading.error,
        control_value=reading.control_value,
    )


def baseline_message(stats: BaselineStats, required_seconds: float) -> pb.Baseline:
    return pb.Baseline(
        slo=stats.slo,
        samples=stats.samples,
        seconds_covered=stats.seconds_covered,
        min=stats.minimum,
        p1=stats.p1,
        p5=stats.p5,
        median=stats.median,
        p95=stats.p95,
        unreadable=stats.unreadable,
        required_seconds=required_seconds,
    )


def evidence_message(evidence: Evidence) -> pb.SidecarEvidence:
    return pb.SidecarEvidence(
        sidecar=evidence.sidecar,
        type=evidence.type,
        version=evidence.version,
        outcome=evidence.outcome,
        error=evidence.error,
        at=timestamp(evidence.at),
    )


def state_message(state: State | None) -> pb.State.ValueType:
    return pb.STATE_UNSPECIFIED if state is None else pb.State.Value(state.value)


def state_from_message(value: pb.State.ValueType) -> State:
    return State(pb.State.Name(value))


def timestamp(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if seconds is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def xds_statuses(sidecar: SidecarStatus, type_urls: Iterable[str]) -> list[pb.XdsTypeStatus]:
    """What the sidecar (or node agent) was sent, ACKed and NACKed, per type it uses."""
    found = []
    for type_url in type_urls:
        status = sidecar.types.get(type_url)
        if status is None:
            continue
        found.append(
            pb.XdsTypeStatus(
                type=types.short_name(type_url),
                version_sent=status.sent_version,
                version_acked=status.acked_version,
                acked_at=timestamp(status.acked_at),
                version_nacked=status.nacked_version,
                last_error=status.last_error,
                nacked_at=timestamp(status.nacked_at),
            )
        )
    return found
