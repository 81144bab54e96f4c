"""DiscoveryResponses as bytes: the resources serialized once per distinct content.

Sidecars carrying the same faults get byte-identical resources (the cache interns them),
and a response differs from another with the same resources only in its version and
nonce. Protobuf fields concatenate, so a response is `version + resources + type +
nonce`, where `resources` (the repeated `Any` field, with its TTL envelopes when leased)
is serialized once per (resources, TTL) and shared by every stream and every lease
re-send; the streams write the bytes with no serializer (`server.py`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, duration_pb2

# DiscoveryResponse field numbers (envoy/service/discovery/v3/discovery.proto).
_VERSION_INFO, _RESOURCES, _TYPE_URL, _NONCE = 1, 2, 4, 5
_RESOURCE_TYPE_URL = "type.googleapis.com/envoy.service.discovery.v3.Resource"
BODY_CACHE_SIZE = 1024  # distinct bodies due at once are few; see INTERN_LIMIT


@dataclass(frozen=True)
class Response:
    """One DiscoveryResponse as written on a stream, with the fields the server and its
    tests look at; `resources` decodes the bytes (tests only, never on the hot path)."""

    type_url: str
    version_info: str
    nonce: str
    payload: bytes

    @cached_property
    def message(self) -> discovery_pb2.DiscoveryResponse:
        return discovery_pb2.DiscoveryResponse.FromString(self.payload)

    @property
    def resources(self) -> Sequence[any_pb2.Any]:
        return self.message.resources


def field(number: int, value: bytes) -> bytes:
    """One length-delimited field, wire-encoded."""
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class Bodies:
    """The serialized `resources` field of a response, once per distinct content.

    Keyed by the identities of the (interned, never mutated) `Any` objects and the TTL;
    each entry keeps its objects alive, so an id cannot be reused while it is cached.
    """

    def __init__(self, limit: int = BODY_CACHE_SIZE) -> None:
        self._bodies: OrderedDict[tuple[object, ...], tuple[tuple[any_pb2.Any, ...], bytes]] = (
            OrderedDict()
        )
        self._limit = limit

    def body(self, resources: Sequence[tuple[str, any_pb2.Any]], ttl_ms: int | None) -> bytes:
        key = (ttl_ms, *(id(resource) for _, resource in resources))
        found = self._bodies.get(key)
        objects = tuple(resource for _, resource in resources)
        if found is not None and all(a is b for a, b in zip(found[0], objects, strict=True)):
            self._bodies.move_to_end(key)
            return found[1]
        body = _serialize(resources, ttl_ms)
        self._bodies[key] = (objects, body)
        if len(self._bodies) > self._limit:
            self._bodies.popitem(last=False)
        return body


BODIES = Bodies()


def unstamped(
    type_url: str,
    version: str,
    resources: Sequence[tuple[str, any_pb2.Any]],
    ttl_ms: int | None,
) -> bytes:
    """A response carrying `resources` (name, packed resource), leased for `ttl_ms`
    (each wrapped in a `Resource` envelope with that TTL) or not (None), without its
    nonce: the bytes a stream reuses for every lease re-send of the same content."""
    return b"".join(
        (
            field(_VERSION_INFO, version.encode()),
            BODIES.body(resources, ttl_ms),
            field(_TYPE_URL, type_url.encode()),
        )
    )


def stamped(type_url: str, version: str, nonce: str, unstamped: bytes) -> Response:
    """The response: `unstamped` with its nonce appended (fields concatenate)."""
    return Response(type_url, version, nonce, unstamped + field(_NONCE, nonce.encode()))


def _serialize(resources: Sequence[tuple[str, any_pb2.Any]], ttl_ms: int | None) -> bytes:
    if ttl_ms is None:
        return b"".join(field(_RESOURCES, r.SerializeToString()) for _, r in resources)
    ttl = duration_pb2.Duration()
    ttl.FromMilliseconds(ttl_ms)
    out = []
    for name, resource in resources:
        # No resource-level version: it would make the bytes differ per sidecar, and a
        # state-of-the-world client takes the response's version_info.
        envelope = discovery_pb2.Resource(name=name, resource=resource, ttl=ttl)
        wrapped = any_pb2.Any(type_url=_RESOURCE_TYPE_URL, value=envelope.SerializeToString())
        out.append(field(_RESOURCES, wrapped.SerializeToString()))
    return b"".join(out)
