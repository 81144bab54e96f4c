"""Responses as bytes (`faultplane.xds.wire`): what Envoy parses is what the protobuf
message would have been, and sidecars with the same content share one serialization."""

from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, duration_pb2, struct_pb2

from faultplane.xds import types, wire


def layer(value: float) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(struct_pb2.Struct(fields={"k": struct_pb2.Value(number_value=value)}))
    return packed


def test_a_leased_response_in_bytes_parses_as_the_message_it_stands_for() -> None:
    resource = layer(1.0)
    unstamped = wire.unstamped(types.RUNTIME, "v-7", [("faultplane", resource)], 3000)
    response = wire.stamped(types.RUNTIME, "v-7", "42", unstamped)

    parsed = discovery_pb2.DiscoveryResponse.FromString(response.payload)
    assert (parsed.version_info, parsed.type_url, parsed.nonce) == ("v-7", types.RUNTIME, "42")
    [envelope] = parsed.resources
    wrapped = discovery_pb2.Resource()
    assert envelope.Unpack(wrapped)
    assert wrapped.name == "faultplane" and wrapped.resource == resource
    assert wrapped.ttl == duration_pb2.Duration(seconds=3)


def test_an_unleased_response_carries_the_resources_themselves() -> None:
    resource = layer(2.0)
    response = wire.stamped(
        types.ROUTE, "v-1", "1", wire.unstamped(types.ROUTE, "v-1", [("r", resource)], None)
    )
    assert list(response.resources) == [resource]


def test_sidecars_with_the_same_content_share_one_serialized_body() -> None:
    """Only version and nonce differ between two sidecars' responses: the resources are
    serialized once (the very same bytes object), whatever the version."""
    resource = layer(3.0)
    first = wire.BODIES.body([("faultplane", resource)], 10_000)
    second = wire.BODIES.body([("faultplane", resource)], 10_000)
    other_ttl = wire.BODIES.body([("faultplane", resource)], 5_000)

    assert first is second
    assert other_ttl != first
    a = wire.unstamped(types.RUNTIME, "v-1", [("faultplane", resource)], 10_000)
    b = wire.unstamped(types.RUNTIME, "v-2", [("faultplane", resource)], 10_000)
    assert a.replace(b"v-1", b"v-2") == b


def test_the_interner_stays_bounded_and_keeps_what_a_fleet_shares() -> None:
    """A stream of one-off renders (each injection's) must not grow the server: both maps
    are bounded, the object a whole fleet shares stays hot, and content packed again after
    eviction is the same bytes (sharing lost, never correctness)."""
    from envoy.service.runtime.v3 import rtds_pb2

    from faultplane.xds.cache import AnyInterner

    interner = AnyInterner(limit=8, identities=4)
    shared = rtds_pb2.Runtime(name="base")
    first = interner.pack(shared)
    for i in range(100):
        interner.pack(rtds_pb2.Runtime(name=f"one-off-{i}"))
        assert interner.pack(shared) is first
    assert len(interner._packed) <= 8 and len(interner._by_identity) <= 4
    again = interner.pack(rtds_pb2.Runtime(name="one-off-0"))
    assert again.value == rtds_pb2.Runtime(name="one-off-0").SerializeToString(deterministic=True)
