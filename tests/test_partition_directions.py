"""A partition's `direction` without a sidecar: what the edge accepts and refuses, how an
`ingress` or `both` partition becomes a part on the upstream's sidecars, and what each
side renders. Measured in traffic through real Envoys in tests/test_partition.py."""

from __future__ import annotations

import re
from typing import Any

import pytest
from envoy.extensions.filters.http.fault.v3 import fault_pb2

from faultplane.api.validate import InvalidRequest, validate_request
from faultplane.faults.message import describe_fault
from faultplane.faults.partition import PARTITION, Partition
from faultplane.model.mesh import Mesh, load_mesh
from faultplane.model.spec import FaultSpec, InjectionSpec, Match, Scope
from faultplane.render.faults import FaultAssignment, render_faults
from faultplane.render.resources import EGRESS, INGRESS, PARTITION_HEADER, sidecar_resources
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.xds import types
from tests.conftest import MESH_FILE
from tests.helpers import injection_request

SOUTH_TO_LEDGER = {"selector": "shard=south-1", "max_pods": 3, "upstream": "ledger"}
SLOS = ["merchant-write-success"]  # an SLO catalogue: a request being accepted, not reloaded


@pytest.fixture(scope="module")
def mesh() -> Mesh:
    return load_mesh(MESH_FILE)


def partition(direction: str | None = None, **fault: Any) -> dict[str, Any]:
    return {"type": "partition", **({"direction": direction} if direction else {}), **fault}


def refused(request: pb.InjectionRequest, mesh: Mesh | None, slos: Any) -> list[tuple[str, str]]:
    with pytest.raises(InvalidRequest) as refusal:
        validate_request(request, mesh, slos)
    return refusal.value.problems


# --- the edge --------------------------------------------------------------------------------


def test_an_unknown_direction_is_refused_naming_fault_direction_without_echoing_it(
    mesh: Mesh,
) -> None:
    request = injection_request(target=SOUTH_TO_LEDGER, fault=partition("sideways"))
    [(path, reason)] = refused(request, mesh, SLOS)
    assert path == "fault.direction"
    assert "egress, ingress, both" in reason and "sideways" not in reason


def test_direction_is_not_a_field_of_other_kinds(mesh: Mesh) -> None:
    request = injection_request(fault={"type": "abort", "http_status": 503, "direction": "both"})
    assert [p for p, _ in refused(request, mesh, SLOS)] == ["fault.direction"]


@pytest.mark.parametrize("direction", ["ingress", "both"])
def test_overlay_mode_refuses_ingress_and_both_naming_the_field(direction: str) -> None:
    # Overlay mode: no mesh, a request being accepted (an SLO catalogue).
    single = injection_request(target=SOUTH_TO_LEDGER, fault=partition(direction))
    [(path, reason)] = refused(single, None, SLOS)
    assert path == "fault.direction"
    assert "overlay mode" in reason and "use direction egress" in reason

    several = latency_then(partition(direction))
    assert [p for p, _ in refused(several, None, SLOS)] == ["faults[1].fault.direction"]


def latency_then(fault: dict[str, Any]) -> pb.InjectionRequest:
    """A two-part request: latency on south's inbound, then `fault` from south to ledger."""
    south = {"service": "payments-api", "selector": "shard=south-1", "max_pods": 3}
    latency = {"target": south, "fault": {"type": "latency", "fixed_ms": 5}}
    request = injection_request(
        faults=[latency, {"target": {**south, "upstream": "ledger"}, "fault": fault}]
    )
    request.ClearField("target")
    request.ClearField("fault")
    return request


def test_overlay_mode_accepts_an_egress_partition_as_one_part() -> None:
    spec = validate_request(
        injection_request(target=SOUTH_TO_LEDGER, fault=partition("egress")), None, SLOS
    )
    assert len(spec.parts) == 1 and spec.fault.kind == Partition()


@pytest.mark.parametrize("direction", ["ingress", "both"])
def test_a_pattern_on_a_two_sided_partition_is_refused_naming_it(
    mesh: Mesh, direction: str
) -> None:
    burst = {"kind": "burst", "on_seconds": 5, "off_seconds": 5}
    request = injection_request(target=SOUTH_TO_LEDGER, fault=partition(direction, pattern=burst))
    [(path, reason)] = refused(request, mesh, SLOS)
    assert path == "fault.pattern" and "use direction egress" in reason


# --- two parts -------------------------------------------------------------------------------


def test_an_ingress_partition_adds_a_part_on_every_sidecar_of_the_upstream(mesh: Mesh) -> None:
    match = {"path_prefix": "/score", "methods": ["POST"]}
    request = injection_request(
        target={**SOUTH_TO_LEDGER, "match": match}, fault=partition("ingress", grpc_status=14)
    )
    spec = validate_request(request, mesh, SLOS)
    group, upstream = spec.parts
    assert group.fault.kind == Partition(None, 14, "ingress")
    assert group.target.scope.upstream == "ledger" and group.target.max_pods == 3
    assert upstream.target.service == "ledger"
    assert upstream.target.selector.text == "" and upstream.target.max_pods == 1
    # The upstream's inbound, narrowed by the same match.
    assert upstream.target.scope == Scope(None, Match("/score", (), ("POST",)))
    assert upstream.fault.kind == Partition(None, 14, "ingress", "destination", 0)
    # Reloaded without the mesh: the same parts, every pod of the upstream.
    reloaded = validate_request(request, None, None)
    assert reloaded.parts[1].target.max_pods == 100_000
    assert reloaded.parts[1].fault == upstream.fault


def test_in_several_faults_the_upstreams_part_comes_after_the_requests(mesh: Mesh) -> None:
    spec = validate_request(latency_then(partition("both")), mesh, SLOS)
    assert [p.target.service for p in spec.parts] == ["payments-api", "payments-api", "ledger"]
    destination = spec.parts[2].fault.kind
    assert isinstance(destination, Partition)
    assert destination.side == "destination" and destination.source_part == 1


def test_describe_names_a_direction_other_than_egress() -> None:
    assert describe_fault(pb.Fault(type="partition", direction="both")) == "partition http 503 both"
    assert describe_fault(pb.Fault(type="partition", direction="egress")) == "partition http 503"


# --- rendering -------------------------------------------------------------------------------


def rendered_spec(mesh: Mesh, direction: str, match: dict[str, Any] | None = None) -> InjectionSpec:
    target = {**SOUTH_TO_LEDGER, **({"match": match} if match else {})}
    return validate_request(
        injection_request(target=target, fault=partition(direction)), mesh, SLOS
    )


def test_the_group_of_an_ingress_partition_only_marks_and_the_upstream_only_aborts_marked(
    mesh: Mesh,
) -> None:
    group, upstream = rendered_spec(mesh, "ingress").parts
    assert PARTITION.render("inj-a", group.fault) == []
    assert PARTITION.request_headers("inj-a", group.fault) == [(PARTITION_HEADER, "inj-a")]

    [slot] = PARTITION.render("inj-a.1", upstream.fault)
    assert slot.config.abort.http_status == 503
    assert slot.runtime == {"faultplane.inj-a.1.0.abort_pct": 100.0}
    [matcher] = slot.config.headers
    assert matcher.name == PARTITION_HEADER
    bearing = re.compile(matcher.string_match.safe_regex.regex)
    assert bearing.fullmatch("inj-a") and bearing.fullmatch("inj-b,inj-a")
    assert not bearing.fullmatch("inj-a.1") and not bearing.fullmatch("inj-ab")
    assert PARTITION.request_headers("inj-a.1", upstream.fault) == []


def test_an_egress_partition_aborts_without_marking_and_both_does_both(mesh: Mesh) -> None:
    [egress] = rendered_spec(mesh, "egress").parts
    assert PARTITION.request_headers("inj", egress.fault) == []
    [slot] = PARTITION.render("inj", egress.fault)
    assert not slot.config.headers
    both, _ = rendered_spec(mesh, "both").parts
    assert len(PARTITION.render("inj", both.fault)) == 1
    assert PARTITION.request_headers("inj", both.fault) == [(PARTITION_HEADER, "inj")]


def test_a_match_scoped_both_partition_renders_on_each_sides_routes(mesh: Mesh) -> None:
    group, upstream = rendered_spec(mesh, "both", {"path_prefix": "/score"}).parts
    south, ledger = mesh.pod("payments-api-1"), mesh.pod("ledger-1")
    assert south is not None and ledger is not None

    assignment = FaultAssignment("inj", group.fault, group.target.scope, False)
    routes = render_faults(sidecar_resources(mesh, south), [assignment], 4)[types.ROUTE]
    [vhost] = [v for v in routes[EGRESS].virtual_hosts if v.name == "ledger"]
    marked, default = vhost.routes
    assert marked.match.prefix == "/score"
    assert [(h.header.key, h.header.value) for h in marked.request_headers_to_add] == [
        (PARTITION_HEADER, "inj")
    ]
    # Stripped on every egress route, the faulted one too: Envoy removes before it adds.
    assert list(marked.request_headers_to_remove) == [PARTITION_HEADER]
    assert list(default.request_headers_to_remove) == [PARTITION_HEADER]
    assert not default.request_headers_to_add

    assignment = FaultAssignment("inj.1", upstream.fault, upstream.target.scope, False)
    routes = render_faults(sidecar_resources(mesh, ledger), [assignment], 4)[types.ROUTE]
    inbound = routes[INGRESS].virtual_hosts[0].routes[0]
    assert inbound.match.prefix == "/score"
    config = fault_pb2.HTTPFault()
    inbound.typed_per_filter_config["faultplane.fault.0"].Unpack(config)
    assert [h.name for h in config.headers] == [PARTITION_HEADER]
    assert not inbound.request_headers_to_add


def test_a_partition_spec_renders_as_before_when_egress() -> None:
    # A single egress partition keeps its one slot and no header: stored injections and
    # overlay sidecars see exactly what they saw before directions existed.
    [slot] = PARTITION.render("inj1", FaultSpec(Partition(), 100.0))
    assert slot.config.abort_percent_runtime == "faultplane.inj1.0.abort_pct"
    assert not slot.config.headers
