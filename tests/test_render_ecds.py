"""render_overlay: faults as ECDS fault slots, scoped inside their HTTPFault, switched on
in the runtime layer (overlay mode)."""

from __future__ import annotations

import pytest
from envoy.config.core.v3 import extension_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.service.runtime.v3 import rtds_pb2
from envoy.type.v3 import percent_pb2

from faultplane.faults.abort import Abort
from faultplane.faults.bandwidth import Bandwidth
from faultplane.faults.latency import TAIL_SHARE, Latency
from faultplane.model.spec import FaultSpec, Match, Scope
from faultplane.render.ecds import direction_of, render_overlay, slot_name
from faultplane.render.faults import FaultAssignment, SlotsExhausted, runtime_keys
from faultplane.render.resources import RUNTIME_LAYER, Resources
from faultplane.xds import types

SLOTS = 2
FRAUD = "outbound|8080||fraud-scoring.payments.svc.cluster.local"
ALL_SLOTS = {slot_name(d, i) for d in ("inbound", "outbound") for i in range(SLOTS)}


def assign(
    injection_id: str,
    kind: Latency | Abort | Bandwidth,
    scope: Scope | None = None,
    enabled: bool = True,
    percentage: float = 100.0,
    max_active: int | None = None,
) -> FaultAssignment:
    fault = FaultSpec(kind, percentage=percentage, max_active=max_active)
    return FaultAssignment(injection_id, fault, scope or Scope(), enabled)


def slot(resources: Resources, name: str) -> fault_pb2.HTTPFault:
    """The HTTPFault in slot `name`, checking the ECDS resource around it."""
    extension = resources[types.EXTENSION_CONFIG][name]
    assert isinstance(extension, extension_pb2.TypedExtensionConfig)
    assert extension.name == name
    config = fault_pb2.HTTPFault()
    assert extension.typed_config.Unpack(config)
    return config


def keys(resources: Resources) -> dict[str, float]:
    return runtime_keys(resources[types.RUNTIME])


def test_slot_names_are_per_direction_and_index() -> None:
    assert slot_name("inbound", 0) == "faultplane.inbound.0"
    assert slot_name("outbound", 3) == "faultplane.outbound.3"
    assert direction_of(Scope()) == "inbound"
    assert direction_of(Scope(upstream=FRAUD)) == "outbound"


def test_no_faults_gives_every_slot_an_empty_httpfault_and_an_empty_layer() -> None:
    resources = render_overlay([], SLOTS)
    assert set(resources) == {types.EXTENSION_CONFIG, types.RUNTIME}
    assert set(resources[types.EXTENSION_CONFIG]) == ALL_SLOTS
    for name in ALL_SLOTS:
        assert slot(resources, name) == fault_pb2.HTTPFault()
    runtime = resources[types.RUNTIME][RUNTIME_LAYER]
    assert isinstance(runtime, rtds_pb2.Runtime)
    # The layer is present and empty: Envoy's RTDS init waits for exactly this resource.
    assert runtime.name == RUNTIME_LAYER
    assert runtime.HasField("layer")
    assert not runtime.layer.fields


def test_fixed_delay_takes_one_inbound_slot_armed_at_zero() -> None:
    resources = render_overlay([assign("inj1", Latency(200), percentage=30)], SLOTS)
    config = slot(resources, "faultplane.inbound.0")
    assert config.delay.fixed_delay.ToMilliseconds() == 200
    assert config.delay.percentage.numerator == 0
    assert config.delay_percent_runtime == "faultplane.inj1.0.delay_pct"
    assert not config.upstream_cluster and not config.headers
    for name in ALL_SLOTS - {"faultplane.inbound.0"}:
        assert slot(resources, name) == fault_pb2.HTTPFault()
    assert keys(resources) == {"faultplane.inj1.0.delay_pct": 30.0}


def test_p50_p99_latency_takes_two_chained_slots() -> None:
    resources = render_overlay([assign("inj1", Latency(50, 300))], SLOTS)
    first, second = slot(resources, "faultplane.inbound.0"), slot(resources, "faultplane.inbound.1")
    assert first.delay.fixed_delay.ToMilliseconds() == 50
    assert second.delay.fixed_delay.ToMilliseconds() == 250  # adds up to p99
    assert keys(resources) == {
        "faultplane.inj1.0.delay_pct": 100.0,
        "faultplane.inj1.1.delay_pct": pytest.approx(100.0 * TAIL_SHARE),
    }


@pytest.mark.parametrize(
    ("abort", "field", "value"),
    [(Abort(http_status=503), "http_status", 503), (Abort(grpc_status=14), "grpc_status", 14)],
)
def test_abort_http_or_grpc_with_percentage(abort: Abort, field: str, value: int) -> None:
    resources = render_overlay([assign("inj1", abort, percentage=25)], SLOTS)
    config = slot(resources, "faultplane.inbound.0")
    assert config.abort.WhichOneof("error_type") == field
    assert getattr(config.abort, field) == value
    assert config.abort.percentage.numerator == 0
    assert keys(resources) == {"faultplane.inj1.0.abort_pct": 25.0}
    numerator = resources[types.RUNTIME][RUNTIME_LAYER].layer.fields["faultplane.inj1.0.abort_pct"]
    assert numerator.struct_value.fields["denominator"].string_value == "MILLION"


def test_bandwidth_with_max_active() -> None:
    resources = render_overlay([assign("inj1", Bandwidth(128), max_active=3)], SLOTS)
    config = slot(resources, "faultplane.inbound.0")
    assert config.response_rate_limit.fixed_limit.limit_kbps == 128
    assert config.response_rate_limit.percentage.denominator == (
        percent_pb2.FractionalPercent.MILLION
    )
    assert config.max_active_faults.value == 3
    assert keys(resources) == {"faultplane.inj1.0.rate_limit_pct": 100.0}


def test_upstream_fault_goes_to_an_outbound_slot_scoped_to_that_cluster_only() -> None:
    resources = render_overlay([assign("inj1", Abort(http_status=503), Scope(FRAUD))], SLOTS)
    config = slot(resources, "faultplane.outbound.0")
    assert config.upstream_cluster == FRAUD
    assert config.abort.http_status == 503
    assert slot(resources, "faultplane.inbound.0") == fault_pb2.HTTPFault()


def test_match_becomes_path_header_and_method_matchers() -> None:
    match = Match(path_prefix="/api/v1", headers=(("x-user", "canary"),), methods=("GET", "POST"))
    resources = render_overlay([assign("inj1", Abort(http_status=503), Scope(match=match))], SLOTS)
    headers = {h.name: h.string_match for h in slot(resources, "faultplane.inbound.0").headers}
    assert set(headers) == {":path", "x-user", ":method"}
    assert headers[":path"].prefix == "/api/v1"
    assert headers["x-user"].exact == "canary"
    assert headers[":method"].safe_regex.regex == "^(GET|POST)$"


def test_directions_have_their_own_slots_and_injections_their_own_keys() -> None:
    inbound_a = assign("a", Latency(100))
    inbound_b = assign("b", Abort(http_status=500), enabled=False)
    outbound = assign("c", Latency(50, 300), Scope(FRAUD))
    resources = render_overlay([inbound_a, inbound_b, outbound], SLOTS)
    assert (
        slot(resources, "faultplane.inbound.0").delay_percent_runtime == "faultplane.a.0.delay_pct"
    )
    assert (
        slot(resources, "faultplane.inbound.1").abort_percent_runtime == "faultplane.b.0.abort_pct"
    )
    assert slot(resources, "faultplane.outbound.1").delay_percent_runtime == (
        "faultplane.c.1.delay_pct"
    )
    # b is armed but not switched on: its shape is in its slot, its key is not in the layer.
    assert set(keys(resources)) == {
        "faultplane.a.0.delay_pct",
        "faultplane.c.0.delay_pct",
        "faultplane.c.1.delay_pct",
    }


def test_withdrawing_a_fault_clears_its_slot_explicitly() -> None:
    carrying = render_overlay([assign("inj1", Abort(http_status=503), Scope(FRAUD))], SLOTS)
    cleared = render_overlay([], SLOTS)
    # Envoy keeps a slot's last config when a response leaves it out: the cleared slot is
    # sent, as an empty HTTPFault, not omitted.
    assert set(cleared[types.EXTENSION_CONFIG]) == set(carrying[types.EXTENSION_CONFIG])
    assert slot(carrying, "faultplane.outbound.0") != fault_pb2.HTTPFault()
    assert slot(cleared, "faultplane.outbound.0") == fault_pb2.HTTPFault()
    assert keys(cleared) == {}


def test_more_slots_than_a_direction_has_raises_slots_exhausted() -> None:
    # p50/p99 takes both inbound slots; a third inbound fault has none left.
    faults = [assign("a", Latency(50, 300)), assign("b", Abort(http_status=503))]
    with pytest.raises(SlotsExhausted, match=r"inbound .*all 2 faultplane\.inbound\.\* slots"):
        render_overlay(faults, SLOTS)
    # The other direction's slots are not borrowed, but are free for its own faults.
    outbound = [assign("a", Latency(50, 300)), assign("b", Abort(http_status=503), Scope(FRAUD))]
    assert slot(render_overlay(outbound, SLOTS), "faultplane.outbound.0").abort.http_status == 503


def test_rendering_is_pure_and_repeatable() -> None:
    faults = [assign("inj1", Latency(50, 300), Scope(FRAUD, Match(path_prefix="/x")))]
    first, second = render_overlay(faults, SLOTS), render_overlay(faults, SLOTS)
    for type_url in first:
        for name, message in first[type_url].items():
            assert message.SerializeToString(deterministic=True) == second[type_url][
                name
            ].SerializeToString(deterministic=True)
