"""render_faults: faults armed on routes (RDS) and switched on in the runtime layer (RTDS)."""

from __future__ import annotations

from pathlib import Path

import pytest
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.service.runtime.v3 import rtds_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import json_format

from faultplane.faults.abort import Abort
from faultplane.faults.bandwidth import Bandwidth
from faultplane.faults.latency import Latency
from faultplane.model.mesh import load_mesh
from faultplane.model.spec import FaultSpec, Match, Scope
from faultplane.render.faults import (
    INJECTION_HEADER,
    FaultAssignment,
    SlotsExhausted,
    render_faults,
    runtime_keys,
    runtime_layer,
    slot_configs,
)
from faultplane.render.resources import (
    EGRESS,
    INGRESS,
    RUNTIME_LAYER,
    Resources,
    fault_slot_name,
    sidecar_resources,
)
from faultplane.xds import types

ROOT = Path(__file__).resolve().parent.parent
MESH = load_mesh(ROOT / "envoy-configs" / "mesh.yaml")
POD = MESH.pod("payments-api-1")
SLOTS = 4
MILLION = percent_pb2.FractionalPercent.MILLION


@pytest.fixture
def base() -> Resources:
    assert POD is not None
    return sidecar_resources(MESH, POD)


def serialized(resources: Resources) -> dict[str, dict[str, bytes]]:
    return {
        type_url: {name: msg.SerializeToString(deterministic=True) for name, msg in named.items()}
        for type_url, named in resources.items()
    }


def assign(
    injection_id: str,
    kind: Latency | Abort | Bandwidth,
    upstream: str | None = "fraud-scoring",
    match: Match | None = None,
    percentage: float = 100.0,
    max_active: int | None = None,
    enabled: bool = True,
) -> FaultAssignment:
    return FaultAssignment(
        injection_id,
        FaultSpec(kind, percentage, max_active),
        Scope(upstream, match or Match()),
        enabled,
    )


def route_config(resources: Resources, name: str) -> route_pb2.RouteConfiguration:
    config = resources[types.ROUTE][name]
    assert isinstance(config, route_pb2.RouteConfiguration)
    return config


def vhost(resources: Resources, config: str, name: str) -> route_components_pb2.VirtualHost:
    hosts = [v for v in route_config(resources, config).virtual_hosts if v.name == name]
    assert len(hosts) == 1
    return hosts[0]


def slot(route: route_components_pb2.Route, index: int) -> fault_pb2.HTTPFault:
    any_config = route.typed_per_filter_config[fault_slot_name(index)]
    fault = fault_pb2.HTTPFault()
    assert any_config.Unpack(fault), any_config.type_url
    return fault


def runtime(resources: Resources) -> rtds_pb2.Runtime:
    assert set(resources[types.RUNTIME]) == {RUNTIME_LAYER}
    layer = resources[types.RUNTIME][RUNTIME_LAYER]
    assert isinstance(layer, rtds_pb2.Runtime)
    assert layer.name == RUNTIME_LAYER
    return layer


def is_zero(percent: percent_pb2.FractionalPercent) -> bool:
    return percent.numerator == 0 and percent.denominator == MILLION


# --- (a) fixed latency on an upstream -----------------------------------------------------


def test_fixed_latency_on_upstream_only_touches_that_vhost(base: Resources) -> None:
    before = serialized(base)
    rendered = render_faults(base, [assign("inj-a", Latency(250))], SLOTS)

    routes = vhost(rendered, EGRESS, "fraud-scoring").routes
    assert len(routes) == 1
    (route,) = routes
    assert set(route.typed_per_filter_config) == {fault_slot_name(0)}
    fault = slot(route, 0)
    assert fault.delay.fixed_delay.ToMilliseconds() == 250
    assert is_zero(fault.delay.percentage)
    assert fault.delay_percent_runtime.startswith("faultplane.inj-a.")
    assert fault.delay_percent_runtime.endswith("delay_pct")
    assert not fault.HasField("abort")
    assert not fault.HasField("response_rate_limit")
    assert not fault.HasField("max_active_faults")
    assert [(h.header.key, h.header.value) for h in route.response_headers_to_add] == [
        (INJECTION_HEADER, "inj-a")
    ]
    # Routing itself is unchanged.
    assert route.route.cluster == "fraud-scoring"
    assert route.match.prefix == "/"

    # Ledger vhost and the whole ingress route config are exactly as in the base.
    assert vhost(rendered, EGRESS, "ledger") == vhost(base, EGRESS, "ledger")
    assert route_config(rendered, INGRESS) == route_config(base, INGRESS)
    # Other types are passed through untouched.
    for type_url in (types.CLUSTER, types.ENDPOINT, types.LISTENER):
        assert serialized(rendered)[type_url] == before[type_url]
    # The base is not mutated.
    assert serialized(base) == before
    assert not vhost(base, EGRESS, "fraud-scoring").routes[0].typed_per_filter_config


def test_runtime_keys_are_unique_per_injection(base: Resources) -> None:
    first = slot(
        vhost(
            render_faults(base, [assign("inj-1", Latency(10))], SLOTS), EGRESS, "fraud-scoring"
        ).routes[0],
        0,
    )
    second = slot(
        vhost(
            render_faults(base, [assign("inj-2", Latency(10))], SLOTS), EGRESS, "fraud-scoring"
        ).routes[0],
        0,
    )
    assert first.delay_percent_runtime != second.delay_percent_runtime
    assert "inj-1" in first.delay_percent_runtime
    assert "inj-2" in second.delay_percent_runtime


def test_two_injections_on_one_route_use_two_slots(base: Resources) -> None:
    rendered = render_faults(
        base,
        [assign("inj-1", Latency(10)), assign("inj-2", Abort(http_status=500))],
        SLOTS,
    )
    route = vhost(rendered, EGRESS, "fraud-scoring").routes[0]
    assert set(route.typed_per_filter_config) == {fault_slot_name(0), fault_slot_name(1)}
    assert slot(route, 0).HasField("delay")
    assert slot(route, 1).abort.http_status == 500
    keys = runtime_keys(rendered[types.RUNTIME])
    assert len(keys) == 2
    assert {slot(route, 0).delay_percent_runtime, slot(route, 1).abort_percent_runtime} == set(keys)
    assert [h.header.value for h in route.response_headers_to_add] == ["inj-1", "inj-2"]


def test_no_assignments_renders_the_base(base: Resources) -> None:
    rendered = render_faults(base, [], SLOTS)
    assert serialized(rendered)[types.ROUTE] == serialized(base)[types.ROUTE]
    assert not runtime(rendered).layer.fields


# --- (b) p50/p99 latency ------------------------------------------------------------------


def test_p50_p99_uses_two_slots(base: Resources) -> None:
    rendered = render_faults(base, [assign("inj-b", Latency(200, 500))], SLOTS)
    route = vhost(rendered, EGRESS, "fraud-scoring").routes[0]
    assert set(route.typed_per_filter_config) == {fault_slot_name(0), fault_slot_name(1)}
    p50, tail = slot(route, 0), slot(route, 1)
    assert p50.delay.fixed_delay.ToMilliseconds() == 200
    assert tail.delay.fixed_delay.ToMilliseconds() == 300  # p99 - p50: the delays add up
    assert is_zero(p50.delay.percentage)
    assert is_zero(tail.delay.percentage)
    assert p50.delay_percent_runtime != tail.delay_percent_runtime

    keys = runtime_keys(rendered[types.RUNTIME])
    assert keys == {p50.delay_percent_runtime: 100.0, tail.delay_percent_runtime: 4.0}


def test_p50_p99_tail_share_scales_with_percentage(base: Resources) -> None:
    rendered = render_faults(base, [assign("inj-b", Latency(200, 500), percentage=50)], SLOTS)
    route = vhost(rendered, EGRESS, "fraud-scoring").routes[0]
    keys = runtime_keys(rendered[types.RUNTIME])
    assert keys[slot(route, 0).delay_percent_runtime] == 50.0
    assert keys[slot(route, 1).delay_percent_runtime] == pytest.approx(2.0)


def test_fractional_delay_keeps_sub_millisecond_precision() -> None:
    (config,) = slot_configs("inj", FaultSpec(Latency(1.5)))
    assert config.config.delay.fixed_delay.ToNanoseconds() == 1_500_000


# --- (c) the runtime layer ----------------------------------------------------------------


def test_disabled_assignment_is_armed_but_off(base: Resources) -> None:
    rendered = render_faults(base, [assign("inj-c", Latency(100), enabled=False)], SLOTS)
    assert not runtime(rendered).layer.fields
    assert runtime_keys(rendered[types.RUNTIME]) == {}
    # Still armed on the route: withdrawal turns the runtime off before removing the route.
    route = vhost(rendered, EGRESS, "fraud-scoring").routes[0]
    assert slot(route, 0).delay_percent_runtime


def test_runtime_layer_disabled_is_empty() -> None:
    layer = runtime_layer([assign("inj-c", Latency(100, 300), enabled=False)])
    assert json_format.MessageToDict(layer) == {}


def test_runtime_layer_enabled_sets_fractional_percents() -> None:
    enabled = assign("inj-c", Abort(http_status=503), percentage=30)
    layer = runtime_layer([enabled, assign("inj-off", Latency(5), enabled=False)])
    (config,) = slot_configs("inj-c", enabled.fault)
    key = config.config.abort_percent_runtime
    assert json_format.MessageToDict(layer) == {
        key: {"numerator": 300_000, "denominator": "MILLION"}
    }


@pytest.mark.parametrize("percentage", [100.0, 30.0, 0.5, 0.0001, 12.3456])
def test_runtime_keys_reads_percentages_back(base: Resources, percentage: float) -> None:
    rendered = render_faults(base, [assign("inj-c", Latency(100), percentage=percentage)], SLOTS)
    layer = runtime(rendered).layer
    (key,) = layer.fields
    value = json_format.MessageToDict(layer)[key]
    assert value == {"numerator": round(percentage * 10_000), "denominator": "MILLION"}
    assert runtime_keys(rendered[types.RUNTIME]) == {key: pytest.approx(percentage)}


def test_runtime_layer_denominator_parses_as_fractional_percent() -> None:
    """Envoy reads the runtime value as a FractionalPercent."""
    layer = runtime_layer([assign("inj-c", Latency(100), percentage=25)])
    (value,) = layer.fields.values()
    percent = json_format.ParseDict(
        json_format.MessageToDict(value.struct_value), percent_pb2.FractionalPercent()
    )
    assert percent.numerator == 250_000
    assert percent.denominator == MILLION


# --- (d) abort and bandwidth --------------------------------------------------------------


def test_abort_http(base: Resources) -> None:
    rendered = render_faults(base, [assign("inj-d", Abort(http_status=503), percentage=30)], SLOTS)
    fault = slot(vhost(rendered, EGRESS, "fraud-scoring").routes[0], 0)
    assert fault.abort.WhichOneof("error_type") == "http_status"
    assert fault.abort.http_status == 503
    assert is_zero(fault.abort.percentage)
    assert "inj-d" in fault.abort_percent_runtime
    assert not fault.HasField("delay")
    assert runtime_keys(rendered[types.RUNTIME]) == {fault.abort_percent_runtime: 30.0}


@pytest.mark.parametrize("status", [0, 14])
def test_abort_grpc(base: Resources, status: int) -> None:
    rendered = render_faults(base, [assign("inj-d", Abort(grpc_status=status))], SLOTS)
    fault = slot(vhost(rendered, EGRESS, "fraud-scoring").routes[0], 0)
    # grpc_status 0 (OK) must still be set, or the abort has no error type at all.
    assert fault.abort.WhichOneof("error_type") == "grpc_status"
    assert fault.abort.grpc_status == status
    assert is_zero(fault.abort.percentage)
    assert fault.abort_percent_runtime
    assert runtime_keys(rendered[types.RUNTIME]) == {fault.abort_percent_runtime: 100.0}


def test_bandwidth(base: Resources) -> None:
    rendered = render_faults(base, [assign("inj-d", Bandwidth(64), percentage=10)], SLOTS)
    fault = slot(vhost(rendered, EGRESS, "fraud-scoring").routes[0], 0)
    assert fault.response_rate_limit.fixed_limit.limit_kbps == 64
    assert is_zero(fault.response_rate_limit.percentage)
    assert "inj-d" in fault.response_rate_limit_percent_runtime
    assert not fault.HasField("delay")
    assert not fault.HasField("abort")
    assert runtime_keys(rendered[types.RUNTIME]) == {
        fault.response_rate_limit_percent_runtime: 10.0
    }


# --- (e) inbound --------------------------------------------------------------------------


def test_inbound_faults_the_ingress_routes(base: Resources) -> None:
    rendered = render_faults(base, [assign("inj-e", Latency(40), upstream=None)], SLOTS)
    ingress = route_config(rendered, INGRESS)
    assert len(ingress.virtual_hosts) == 1
    (route,) = ingress.virtual_hosts[0].routes
    assert route.route.cluster == "local-app"
    assert slot(route, 0).delay.fixed_delay.ToMilliseconds() == 40
    assert [h.header.value for h in route.response_headers_to_add] == ["inj-e"]
    assert route_config(rendered, EGRESS) == route_config(base, EGRESS)


# --- (f) match-scoped faults --------------------------------------------------------------

MATCH = Match(path_prefix="/merchant-write", headers=(("x-tenant", "acme"),), methods=("POST",))


def test_match_scoped_fault_gets_its_own_route(base: Resources) -> None:
    before = serialized(base)
    rendered = render_faults(base, [assign("inj-f", Latency(100), match=MATCH)], SLOTS)
    routes = vhost(rendered, EGRESS, "fraud-scoring").routes
    assert [r.name for r in routes] == ["faultplane.inj-f", "fraud-scoring"]
    matched, catch_all = routes

    assert matched.match.prefix == "/merchant-write"
    headers = {h.name: h.string_match for h in matched.match.headers}
    assert set(headers) == {"x-tenant", ":method"}
    assert headers["x-tenant"].exact == "acme"
    assert headers[":method"].safe_regex.regex == "^(POST)$"
    assert matched.route.cluster == "fraud-scoring"
    assert set(matched.typed_per_filter_config) == {fault_slot_name(0)}
    assert slot(matched, 0).delay.fixed_delay.ToMilliseconds() == 100
    assert [h.header.value for h in matched.response_headers_to_add] == ["inj-f"]

    # The catch-all route stays as it was.
    assert catch_all == vhost(base, EGRESS, "fraud-scoring").routes[0]
    assert not catch_all.typed_per_filter_config
    assert not catch_all.response_headers_to_add
    # Other vhosts get no extra route; the base is untouched.
    assert vhost(rendered, EGRESS, "ledger") == vhost(base, EGRESS, "ledger")
    assert serialized(base) == before


def test_match_without_headers_or_methods_matches_prefix_only(base: Resources) -> None:
    rendered = render_faults(
        base, [assign("inj-f", Latency(100), match=Match(path_prefix="/x"))], SLOTS
    )
    matched = vhost(rendered, EGRESS, "fraud-scoring").routes[0]
    assert matched.match.prefix == "/x"
    assert not matched.match.headers


def test_methods_only_match_uses_root_prefix(base: Resources) -> None:
    rendered = render_faults(
        base, [assign("inj-f", Latency(100), match=Match(methods=("GET", "PUT")))], SLOTS
    )
    matched = vhost(rendered, EGRESS, "fraud-scoring").routes[0]
    assert matched.name == "faultplane.inj-f"
    assert matched.match.prefix == "/"
    (method,) = matched.match.headers
    assert method.name == ":method"
    assert method.string_match.safe_regex.regex == "^(GET|PUT)$"


@pytest.mark.parametrize("wide_first", [True, False])
def test_scope_wide_fault_also_covers_match_route(base: Resources, wide_first: bool) -> None:
    scoped = assign("inj-m", Abort(http_status=503), match=MATCH)
    wide = assign("inj-w", Latency(100))
    assignments = [wide, scoped] if wide_first else [scoped, wide]
    rendered = render_faults(base, assignments, SLOTS)
    matched, catch_all = vhost(rendered, EGRESS, "fraud-scoring").routes
    assert matched.name == "faultplane.inj-m"

    # Match route: its own fault in slot 0, the scope-wide fault in the next slot.
    assert set(matched.typed_per_filter_config) == {fault_slot_name(0), fault_slot_name(1)}
    assert slot(matched, 0).abort.http_status == 503
    assert slot(matched, 1).delay.fixed_delay.ToMilliseconds() == 100
    assert sorted(h.header.value for h in matched.response_headers_to_add) == [
        "inj-m",
        "inj-w",
    ]

    # Catch-all: only the scope-wide fault, in slot 0.
    assert set(catch_all.typed_per_filter_config) == {fault_slot_name(0)}
    assert slot(catch_all, 0).delay.fixed_delay.ToMilliseconds() == 100
    assert slot(catch_all, 0).delay_percent_runtime == slot(matched, 1).delay_percent_runtime
    assert [h.header.value for h in catch_all.response_headers_to_add] == ["inj-w"]


def test_match_scoped_inbound(base: Resources) -> None:
    rendered = render_faults(base, [assign("inj-i", Latency(5), upstream=None, match=MATCH)], SLOTS)
    routes = route_config(rendered, INGRESS).virtual_hosts[0].routes
    assert [r.name for r in routes] == ["faultplane.inj-i", "local-app"]
    assert routes[0].route.cluster == "local-app"
    assert not routes[1].typed_per_filter_config


# --- (g) slots ----------------------------------------------------------------------------


def test_slots_exhausted_by_a_distribution(base: Resources) -> None:
    before = serialized(base)
    with pytest.raises(SlotsExhausted, match="fraud-scoring"):
        render_faults(base, [assign("inj-g", Latency(200, 500))], fault_slots=1)
    assert serialized(base) == before


def test_slots_exhausted_by_many_injections(base: Resources) -> None:
    assignments = [assign(f"inj-{i}", Abort(http_status=500)) for i in range(SLOTS)]
    render_faults(base, assignments, SLOTS)  # exactly enough
    with pytest.raises(SlotsExhausted):
        render_faults(base, [*assignments, assign("inj-x", Bandwidth(1))], SLOTS)


def test_slots_are_counted_per_route(base: Resources) -> None:
    """One slot each on two different vhosts (and on ingress) fits in fault_slots=1."""
    rendered = render_faults(
        base,
        [
            assign("inj-1", Latency(10), upstream="fraud-scoring"),
            assign("inj-2", Latency(10), upstream="ledger"),
            assign("inj-3", Latency(10), upstream=None),
        ],
        fault_slots=1,
    )
    assert slot(vhost(rendered, EGRESS, "ledger").routes[0], 0).delay_percent_runtime
    assert slot(vhost(rendered, EGRESS, "fraud-scoring").routes[0], 0).delay_percent_runtime


# --- (h) max_active -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind",
    [Latency(200, 500), Abort(http_status=503), Bandwidth(8)],
    ids=["latency", "abort", "bandwidth"],
)
def test_max_active_sets_max_active_faults(
    base: Resources, kind: Latency | Abort | Bandwidth
) -> None:
    rendered = render_faults(base, [assign("inj-h", kind, max_active=7)], SLOTS)
    route = vhost(rendered, EGRESS, "fraud-scoring").routes[0]
    assert route.typed_per_filter_config
    for index in range(len(route.typed_per_filter_config)):
        fault = slot(route, index)
        assert fault.HasField("max_active_faults")
        assert fault.max_active_faults.value == 7
