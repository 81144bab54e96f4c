"""Renders faults for an overlay sidecar: ECDS fault slots plus the leased runtime layer.

In overlay mode another control plane owns the sidecar's listeners, routes and clusters;
faultplane serves only the fault layer. The sidecar's own config declares fault filters
named `faultplane.inbound.<i>` (every inbound HCM) and `faultplane.outbound.<i>` (every
outbound HCM) whose config comes from faultplane over ECDS. With no routes to scope by,
a fault is scoped inside its HTTPFault: `upstream_cluster` for calls to one dependency,
`headers` for a `match`.

Armed and switched on exactly as on routes (faultplane.render.faults): the slot carries
the kind's HTTPFault at 0 % with runtime keys unique to the injection, and the leased
RTDS layer sets those keys. Every slot is in every rendering: an unused one is
`HTTPFault{}` (passes everything), because a slot left out of a response is not cleared
by Envoy. Pure: no I/O, nothing cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal

from envoy.config.core.v3 import extension_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.service.runtime.v3 import rtds_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf.message import Message

from faultplane.model.spec import Scope
from faultplane.render.faults import (
    FaultAssignment,
    SlotsExhausted,
    header_matchers,
    runtime_layer,
    slot_configs,
)
from faultplane.render.resources import RUNTIME_LAYER, Resources
from faultplane.xds import types

Direction = Literal["inbound", "outbound"]
INBOUND: Final = "inbound"
OUTBOUND: Final = "outbound"
DIRECTIONS: Final[tuple[Direction, Direction]] = (INBOUND, OUTBOUND)


def slot_name(direction: Direction, index: int) -> str:
    """The ECDS resource name of fault slot `index` of `direction` (the filter name the
    sidecar's config gives it, and what its ECDS stream subscribes to)."""
    return f"faultplane.{direction}.{index}"


def direction_of(scope: Scope) -> Direction:
    """Inbound traffic's slots, or those of calls out (a scope naming an upstream)."""
    return INBOUND if scope.upstream is None else OUTBOUND


def render_overlay(assignments: Sequence[FaultAssignment], fault_slots: int) -> Resources:
    """Every slot of both directions and the runtime layer, for these assignments.

    Each assignment takes as many consecutive slots of its direction as its kind renders
    (a p50/p99 latency takes two), in the order given. Raises SlotsExhausted when a
    direction would need more than `fault_slots`.
    """
    configs = {
        slot_name(direction, i): fault_pb2.HTTPFault()
        for direction in DIRECTIONS
        for i in range(fault_slots)
    }
    used = dict.fromkeys(DIRECTIONS, 0)
    for assignment in assignments:
        direction = direction_of(assignment.scope)
        for slot in slot_configs(assignment.injection_id, assignment.fault):
            index = used[direction]
            if index >= fault_slots:
                raise SlotsExhausted(
                    f"{direction} traffic has no free fault slot (all {fault_slots} "
                    f"faultplane.{direction}.* slots in use)"
                )
            used[direction] = index + 1
            # A kind renders fresh messages on every call: scoping them in place is safe.
            configs[slot_name(direction, index)] = _scoped(slot.config, assignment.scope)
    extension_configs: dict[str, Message] = {}
    for name, config in configs.items():
        extension = extension_pb2.TypedExtensionConfig(name=name)
        extension.typed_config.Pack(config)
        extension_configs[name] = extension
    runtime = rtds_pb2.Runtime(name=RUNTIME_LAYER, layer=runtime_layer(assignments))
    return {types.EXTENSION_CONFIG: extension_configs, types.RUNTIME: {RUNTIME_LAYER: runtime}}


def _scoped(config: fault_pb2.HTTPFault, scope: Scope) -> fault_pb2.HTTPFault:
    """`config` narrowed to the scope's traffic: the dependency's Envoy cluster (matched
    exactly by name) and the match's path prefix, headers and methods."""
    if scope.upstream is not None:
        config.upstream_cluster = scope.upstream
    if scope.match.path_prefix:
        config.headers.add(
            name=":path", string_match=string_pb2.StringMatcher(prefix=scope.match.path_prefix)
        )
    config.headers.extend(header_matchers(scope.match))
    return config


__all__ = [
    "DIRECTIONS",
    "INBOUND",
    "OUTBOUND",
    "Direction",
    "SlotsExhausted",
    "direction_of",
    "render_overlay",
    "slot_name",
]
