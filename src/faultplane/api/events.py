"""The watch's events as the API sends them (WatchInjections with `kinds`)."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from faultplane.api.convert import injection_message, reading_message, transition_message
from faultplane.api.gate import ApiError
from faultplane.api.governance import freeze_message
from faultplane.lifecycle.events import (
    FREEZE,
    READING,
    SCHEDULING,
    TRANSITION,
    Event,
    FreezeEvent,
    ReadingEvent,
    SchedulingEvent,
)
from faultplane.v1 import faultplane_pb2 as pb

KIND_NAMES = {
    pb.INJECTION_EVENT_TRANSITION: TRANSITION,
    pb.INJECTION_EVENT_READING: READING,
    pb.INJECTION_EVENT_FREEZE: FREEZE,
    pb.INJECTION_EVENT_SCHEDULING: SCHEDULING,
}


def requested_kinds(kinds: Iterable[int]) -> set[str]:
    """The event kinds a WatchInjectionsRequest asks for; INVALID_ARGUMENT for a value
    this server does not know (a newer client's), naming it."""
    names = set()
    for kind in kinds:
        if kind not in KIND_NAMES:
            raise ApiError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"kinds: unknown event kind {kind} (known: "
                f"{', '.join(pb.InjectionEventKind.Name(k) for k in KIND_NAMES)})",
            )
        names.add(KIND_NAMES[kind])
    return names


def event_message(event: Event, only: str) -> pb.InjectionEvent | None:
    """The InjectionEvent for `event`, or None when a watch of injection `only` skips it
    (another injection's transition or reading; a freeze concerns every injection)."""
    if isinstance(event, ReadingEvent):
        if only and event.injection_id != only:
            return None
        return pb.InjectionEvent(
            kind=pb.INJECTION_EVENT_READING,
            injection_id=event.injection_id,
            reading=reading_message(event.reading),
        )
    if isinstance(event, FreezeEvent):
        freeze = freeze_message(event.freeze)
        freeze.lapsed = event.lapsed
        return pb.InjectionEvent(kind=pb.INJECTION_EVENT_FREEZE, freeze=freeze)
    if isinstance(event, SchedulingEvent):  # like a freeze, it concerns every injection
        return pb.InjectionEvent(kind=pb.INJECTION_EVENT_SCHEDULING)
    injection, change = event
    if only and injection.id != only:
        return None
    return pb.InjectionEvent(
        kind=pb.INJECTION_EVENT_TRANSITION,
        injection=injection_message(injection),
        transition=transition_message(change),
        injection_id=injection.id,
    )
