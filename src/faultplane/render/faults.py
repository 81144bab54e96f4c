"""Renders faults onto a sidecar's routes and runtime layer (DESIGN: "How a fault reaches
the data plane").

A fault is armed by per-route `typed_per_filter_config` on the idle fault slots: a full
HTTPFault whose percentages are 0 and whose `*_percent_runtime` keys are unique to the
injection. It is switched on by setting those keys in the `faultplane` RTDS layer, which
the control server leases with a TTL; when the lease runs out (the control server died),
the keys vanish and the fault is off. What each fault kind puts in its slots is the
kind's own (faultplane.faults); this module places the slots on routes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.service.runtime.v3 import rtds_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import struct_pb2
from google.protobuf.message import Message

from faultplane.faults.registry import kind_of
from faultplane.faults.slots import SlotConfig
from faultplane.model.spec import FaultSpec, Match, Scope
from faultplane.render.resources import EGRESS, INGRESS, RUNTIME_LAYER, Resources, fault_slot_name
from faultplane.xds import types

INJECTION_HEADER = "x-faultplane-injection"
_MILLION = 1_000_000


class SlotsExhausted(ValueError):
    """More faults on one route than the sidecar's listeners have fault slots."""


@dataclass(frozen=True)
class FaultAssignment:
    """One injection's fault on one sidecar. `enabled`: its runtime keys are set.

    `level` scales the runtime percentages only (a pattern's current share of the
    fault's own; 0 is off with the keys still leased): the armed config never depends
    on it, so a pattern's change is one RTDS push."""

    injection_id: str
    fault: FaultSpec
    scope: Scope
    enabled: bool
    level: float = 1.0


def slot_configs(injection_id: str, fault: FaultSpec) -> list[SlotConfig]:
    """The slot configurations that realise `fault` (several for a latency distribution)."""
    return kind_of(fault.kind).render(injection_id, fault)


def render_faults(
    base: Resources, assignments: Sequence[FaultAssignment], fault_slots: int
) -> Resources:
    """`base` with every assignment armed on its routes and, if enabled, switched on.

    Pure: `base` is not modified. Raises SlotsExhausted when a route would need more slots
    than there are.
    """
    routes = {name: _copy(route) for name, route in base[types.ROUTE].items()}
    used: dict[tuple[str, str, str], int] = {}
    # Match-scoped routes first, so that scope-wide faults also cover them.
    ordered = sorted(assignments, key=lambda a: not a.scope.match)
    for assignment in ordered:
        route_config = routes[route_config_name(assignment.scope)]
        for vhost in _virtual_hosts(route_config, assignment.scope):
            targets = _routes_for(vhost, assignment)
            for route in targets:
                _arm(route, assignment, used, route_config.name, vhost.name, fault_slots)
    runtime = rtds_pb2.Runtime(name=RUNTIME_LAYER, layer=runtime_layer(assignments))
    return {**base, types.ROUTE: routes, types.RUNTIME: {RUNTIME_LAYER: runtime}}


def runtime_layer(assignments: Iterable[FaultAssignment]) -> struct_pb2.Struct:
    layer = struct_pb2.Struct()
    for assignment in assignments:
        if not assignment.enabled:
            continue
        for slot in slot_configs(assignment.injection_id, assignment.fault):
            for key, percent in slot.runtime.items():
                scaled = min(100.0, percent * assignment.level)
                layer.fields[key].struct_value.update(
                    {"numerator": round(scaled * _MILLION / 100), "denominator": "MILLION"}
                )
    return layer


def route_config_name(scope: Scope) -> str:
    """The route configuration a scope's fault goes on: inbound traffic's, or calls out."""
    return INGRESS if scope.upstream is None else EGRESS


def _virtual_hosts(
    route_config: route_pb2.RouteConfiguration, scope: Scope
) -> list[route_components_pb2.VirtualHost]:
    if scope.upstream is None:
        return list(route_config.virtual_hosts)
    return [vhost for vhost in route_config.virtual_hosts if vhost.name == scope.upstream]


def _routes_for(
    vhost: route_components_pb2.VirtualHost, assignment: FaultAssignment
) -> list[route_components_pb2.Route]:
    """The routes an assignment applies to; a match-scoped one gets a route of its own."""
    if not assignment.scope.match:
        return list(vhost.routes)
    default = vhost.routes[-1]
    route = route_components_pb2.Route(
        name=f"faultplane.{assignment.injection_id}",
        match=_route_match(assignment.scope.match),
    )
    route.route.CopyFrom(default.route)
    route.request_headers_to_remove.extend(default.request_headers_to_remove)
    vhost.routes.insert(0, route)
    return [vhost.routes[0]]


def _route_match(match: Match) -> route_components_pb2.RouteMatch:
    route_match = route_components_pb2.RouteMatch(prefix=match.path_prefix or "/")
    route_match.headers.extend(header_matchers(match))
    return route_match


def header_matchers(match: Match) -> list[route_components_pb2.HeaderMatcher]:
    """The match's headers (each exact) and methods (one `:method` regex), but not its
    path prefix: a route matches that itself, the overlay's HTTPFault.headers as `:path`."""
    matchers = [
        route_components_pb2.HeaderMatcher(
            name=name, string_match=string_pb2.StringMatcher(exact=value)
        )
        for name, value in match.headers
    ]
    if match.methods:
        matchers.append(
            route_components_pb2.HeaderMatcher(
                name=":method",
                string_match=string_pb2.StringMatcher(
                    safe_regex=regex_pb2.RegexMatcher(regex=f"^({'|'.join(match.methods)})$")
                ),
            )
        )
    return matchers


def _arm(
    route: route_components_pb2.Route,
    assignment: FaultAssignment,
    used: dict[tuple[str, str, str], int],
    route_config: str,
    vhost: str,
    fault_slots: int,
) -> None:
    key = (route_config, vhost, route.name)
    for slot in slot_configs(assignment.injection_id, assignment.fault):
        index = used.get(key, 0)
        if index >= fault_slots:
            raise SlotsExhausted(
                f"route {route.name!r} of {vhost!r} ({route_config}) has no free fault slot "
                f"(all {fault_slots} in use)"
            )
        used[key] = index + 1
        route.typed_per_filter_config[fault_slot_name(index)].Pack(slot.config)
    header = route.response_headers_to_add.add()
    header.header.key = INJECTION_HEADER
    header.header.value = assignment.injection_id
    header.append_action = header.APPEND_IF_EXISTS_OR_ADD
    for name, value in request_headers(assignment):
        added = route.request_headers_to_add.add()
        added.header.key, added.header.value = name, value
        added.append_action = added.APPEND_IF_EXISTS_OR_ADD


def request_headers(assignment: FaultAssignment) -> list[tuple[str, str]]:
    """Headers the fault adds to the requests its routes forward (a partition's mark for
    the upstream's inbound); a kind that adds none has no `request_headers`."""
    kind = kind_of(assignment.fault.kind)
    add = getattr(kind, "request_headers", None)
    return [] if add is None else add(assignment.injection_id, assignment.fault)


def _copy(message: Message) -> Message:
    copy = type(message)()
    copy.CopyFrom(message)
    return copy


def runtime_keys(runtimes: dict[str, Message]) -> dict[str, float]:
    """The runtime layer's fault keys as percentages (for plans and display)."""
    keys: dict[str, float] = {}
    for runtime in runtimes.values():
        assert isinstance(runtime, rtds_pb2.Runtime)
        for key, value in runtime.layer.fields.items():
            numerator = value.struct_value.fields["numerator"].number_value
            keys[key] = numerator * 100 / _MILLION
    return keys
