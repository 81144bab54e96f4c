"""API messages as the JSON the dashboard's pages read: the proto's own JSON mapping
(field names as in the proto, timestamps RFC 3339, states by name), so the browser sees
the same words as `faultplane get --json`."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from faultplane.api.convert import reading_message
from faultplane.model.injection import SloReading
from faultplane.v1 import faultplane_pb2 as pb

# What the dashboard calls live: on the Now page, abortable (a queued one is cancelled).
LIVE_STATES = (pb.PENDING, pb.ACTIVE, pb.PENDING_APPROVAL, pb.QUEUED)


def as_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=False
    )


def readings_json(readings: list[SloReading]) -> list[dict[str, Any]]:
    return [as_json(reading_message(r)) for r in readings]
