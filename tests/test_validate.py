"""validate_request: the issue's example document, good variants, and every bad input."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from faultplane.api.validate import InvalidRequest, validate_request
from faultplane.faults.abort import Abort
from faultplane.faults.bandwidth import Bandwidth
from faultplane.faults.latency import Latency
from faultplane.model.mesh import load_mesh
from faultplane.model.selector import parse_selector
from faultplane.model.spec import (
    FaultSpec,
    InjectionSpec,
    Match,
    Scope,
    SteadyStateSpec,
    TargetSpec,
)
from faultplane.v1 import faultplane_pb2 as pb
from tests.helpers import EXAMPLE

ROOT = Path(__file__).resolve().parent.parent
MESH = load_mesh(ROOT / "envoy-configs" / "mesh.yaml")
SLOS = {"merchant-write-success"}


DELETE = object()


def modified(changes: dict[str, Any]) -> dict[str, Any]:
    """EXAMPLE with dotted paths set to new values (or removed, with DELETE)."""
    doc = copy.deepcopy(EXAMPLE)
    for path, value in changes.items():
        *parents, last = path.split(".")
        node = doc
        for name in parents:
            node = node.setdefault(name, {})
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return doc


def parse(doc: dict[str, Any]) -> pb.InjectionRequest:
    return json_format.ParseDict(doc, pb.InjectionRequest())


def validate(doc: dict[str, Any], slos: set[str] | None = None) -> InjectionSpec:
    return validate_request(parse(doc), MESH, slos)


def problems_of(doc: dict[str, Any], slos: set[str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(InvalidRequest) as info:
        validate(doc, slos)
    assert info.value.problems, "InvalidRequest without problems"
    return info.value.problems


# --- the example document -----------------------------------------------------------------


def test_issue_example_parses_as_is() -> None:
    spec = validate(EXAMPLE)
    assert spec == InjectionSpec(
        target=TargetSpec(
            service="payments-api",
            selector=parse_selector("shard=south-1"),
            max_pods=3,
            scope=Scope(upstream="fraud-scoring"),
        ),
        fault=FaultSpec(Latency(200, 500), percentage=100.0, max_active=None),
        duration_seconds=240,
        steady_state=SteadyStateSpec("merchant-write-success", 0.995, 60, ""),
        hypothesis="fraud-scoring 200ms degradation must not breach merchant-write SLO",
        owner="sre-oncall@paysetu.example",
    )
    assert spec.target.scope.upstream is not None  # outbound: calls to a dependency
    assert not spec.target.scope.match
    assert spec.target.selector.matches({"shard": "south-1"})
    assert not spec.target.selector.matches({"shard": "north-1"})


def test_issue_example_accepted_with_catalogue() -> None:
    assert validate(EXAMPLE, SLOS).steady_state.slo == "merchant-write-success"


def test_request_is_not_modified() -> None:
    request = parse(EXAMPLE)
    before = request.SerializeToString(deterministic=True)
    validate_request(request, MESH, SLOS)
    assert request.SerializeToString(deterministic=True) == before


# --- good variants ------------------------------------------------------------------------


def test_latency_fixed() -> None:
    spec = validate(modified({"fault": {"type": "latency", "fixed_ms": 150}}))
    assert spec.fault.kind == Latency(150)
    assert spec.fault.kind.p99_ms is None


def test_latency_p50_alone() -> None:
    spec = validate(modified({"fault": {"type": "latency", "p50_ms": 75}}))
    assert spec.fault.kind == Latency(75, None)


def test_abort_http_with_percentage() -> None:
    spec = validate(modified({"fault": {"type": "abort", "http_status": 503, "percentage": 30}}))
    assert spec.fault == FaultSpec(Abort(http_status=503), percentage=30.0)
    assert spec.fault.kind.grpc_status is None


@pytest.mark.parametrize("status", [0, 14, 16])
def test_abort_grpc(status: int) -> None:
    spec = validate(modified({"fault": {"type": "abort", "grpc_status": status}}))
    assert spec.fault.kind == Abort(http_status=None, grpc_status=status)


@pytest.mark.parametrize("status", [200, 599])
def test_abort_http_bounds(status: int) -> None:
    assert validate(
        modified({"fault": {"type": "abort", "http_status": status}})
    ).fault.kind == Abort(http_status=status)


def test_bandwidth() -> None:
    spec = validate(modified({"fault": {"type": "bandwidth", "kbps": 64, "max_active": 5}}))
    assert spec.fault == FaultSpec(Bandwidth(64), percentage=100.0, max_active=5)


def test_match() -> None:
    spec = validate(
        modified(
            {
                "target.match": {
                    "path_prefix": "/merchant-write",
                    "headers": {"X-Tenant": "acme", "x-canary": "1"},
                    "methods": ["post", "PUT", "POST"],
                }
            }
        )
    )
    assert spec.target.scope == Scope(
        upstream="fraud-scoring",
        match=Match(
            path_prefix="/merchant-write",
            headers=(("x-canary", "1"), ("x-tenant", "acme")),
            methods=("POST", "PUT"),
        ),
    )
    assert spec.target.scope.match


def test_empty_match_is_no_match() -> None:
    spec = validate(modified({"target.match": {}}))
    assert spec.target.scope.match == Match()
    assert not spec.target.scope.match


def test_no_upstream_is_inbound() -> None:
    spec = validate(modified({"target.upstream": DELETE}))
    assert spec.target.scope == Scope(upstream=None)
    assert spec.target.scope.upstream is None  # inbound


def test_inbound_on_service_without_dependencies() -> None:
    spec = validate(modified({"target.service": "ledger", "target.upstream": DELETE}))
    assert spec.target.service == "ledger"
    assert spec.target.scope.upstream is None


def test_upstream_ledger_is_a_dependency_of_payments_api() -> None:
    assert validate(modified({"target.upstream": "ledger"})).target.scope.upstream == "ledger"


def test_empty_selector() -> None:
    spec = validate(modified({"target.selector": ""}))
    assert spec.target.selector.requirements == ()
    assert spec.target.selector.matches({"shard": "north-1"})


def test_compare_control() -> None:
    assert validate(modified({"steady_state.compare": "control"})).steady_state.compare == (
        "control"
    )


def test_unknown_slo_accepted_without_catalogue() -> None:
    spec = validate(modified({"steady_state.slo": "anything-goes"}), slos=None)
    assert spec.steady_state.slo == "anything-goes"


def test_hypothesis_and_owner_are_stripped() -> None:
    spec = validate(modified({"hypothesis": "  h  ", "owner": " me@x "}))
    assert (spec.hypothesis, spec.owner) == ("h", "me@x")


def test_limits_are_inclusive() -> None:
    spec = validate(
        modified(
            {
                "duration_seconds": 24 * 3600,
                "fault": {"type": "latency", "fixed_ms": 600_000, "percentage": 100},
                "steady_state.min": 0,
            }
        )
    )
    assert spec.duration_seconds == 24 * 3600
    assert spec.fault.kind == Latency(600_000)
    assert spec.steady_state.min == 0


# --- bad inputs ---------------------------------------------------------------------------

LATENCY = {"type": "latency"}
ABORT = {"type": "abort"}

BAD: list[tuple[str, dict[str, Any], str, str]] = [
    # (id, changes to EXAMPLE, expected field path, a word of the reason)
    ("missing target", {"target": DELETE}, "target", "required"),
    ("missing fault", {"fault": DELETE}, "fault", "required"),
    ("missing steady_state", {"steady_state": DELETE}, "steady_state", "required"),
    ("missing hypothesis", {"hypothesis": DELETE}, "hypothesis", "required"),
    ("blank hypothesis", {"hypothesis": "   "}, "hypothesis", "required"),
    ("hypothesis too long", {"hypothesis": "h" * 4097}, "hypothesis", "4096"),
    ("missing owner", {"owner": DELETE}, "owner", "required"),
    ("missing duration", {"duration_seconds": DELETE}, "duration_seconds", "required"),
    ("missing service", {"target.service": DELETE}, "target.service", "required"),
    ("unknown service", {"target.service": "billing"}, "target.service", "unknown service"),
    ("selector syntax", {"target.selector": "shard in (a"}, "target.selector", "unbalanced"),
    ("selector garbage", {"target.selector": "a in b"}, "target.selector", "cannot parse"),
    ("max_pods 0", {"target.max_pods": 0}, "target.max_pods", "between 1"),
    ("max_pods missing", {"target.max_pods": DELETE}, "target.max_pods", "between 1"),
    ("max_pods huge", {"target.max_pods": 100_001}, "target.max_pods", "between 1"),
    (
        "upstream of a leaf service",
        {"target.service": "fraud-scoring", "target.upstream": "ledger"},
        "target.upstream",
        "not a dependency",
    ),
    ("upstream unknown", {"target.upstream": "nowhere"}, "target.upstream", "not a dependency"),
    ("upstream is itself", {"target.upstream": "payments-api"}, "target.upstream", "dependenc"),
    (
        "path_prefix without slash",
        {"target.match": {"path_prefix": "merchant-write"}},
        "target.match.path_prefix",
        "'/'",
    ),
    (
        "unknown method",
        {"target.match": {"methods": ["GET", "FETCH"]}},
        "target.match.methods",
        "FETCH",
    ),
    (
        "bad header name",
        {"target.match": {"headers": {"bad header": "x"}}},
        "target.match.headers.bad header",
        "header name",
    ),
    (
        "pseudo header",
        {"target.match": {"headers": {":path": "/x"}}},
        "target.match.headers.:path",
        "header name",
    ),
    ("unknown fault type", {"fault.type": "crash"}, "fault.type", "latency"),
    ("missing fault type", {"fault.type": DELETE}, "fault.type", "must be one of"),
    (
        "fixed_ms with p50_ms",
        {"fault": {**LATENCY, "fixed_ms": 100, "p50_ms": 100}},
        "fault.fixed_ms",
        "not both",
    ),
    (
        "fixed_ms with p99_ms",
        {"fault": {**LATENCY, "fixed_ms": 100, "p99_ms": 300}},
        "fault.fixed_ms",
        "not both",
    ),
    ("latency without delay", {"fault": LATENCY}, "fault.p50_ms", "fixed_ms or p50_ms"),
    ("p99 alone", {"fault": {**LATENCY, "p99_ms": 300}}, "fault.p50_ms", "p50_ms"),
    ("p99 equal p50", {"fault.p99_ms": 200}, "fault.p99_ms", "p50_ms (200)"),
    ("p99 below p50", {"fault.p99_ms": 100}, "fault.p99_ms", "p50_ms (200)"),
    ("negative p50", {"fault.p50_ms": -5}, "fault.p50_ms", "600000"),
    ("zero fixed_ms", {"fault": {**LATENCY, "fixed_ms": 0}}, "fault.fixed_ms", "600000"),
    ("negative fixed", {"fault": {**LATENCY, "fixed_ms": -1}}, "fault.fixed_ms", "600000"),
    ("delay over max", {"fault.p99_ms": 600_001}, "fault.p99_ms", "600000"),
    (
        "fixed over max",
        {"fault": {**LATENCY, "fixed_ms": 600_001}},
        "fault.fixed_ms",
        "600000",
    ),
    (
        "infinite delay",
        {"fault.p50_ms": "Infinity", "fault.p99_ms": DELETE},
        "fault.p50_ms",
        "600000",
    ),
    (
        "abort with both statuses",
        {"fault": {**ABORT, "http_status": 503, "grpc_status": 14}},
        "fault.http_status",
        "exactly one",
    ),
    ("abort with neither status", {"fault": ABORT}, "fault.http_status", "exactly one"),
    ("http_status 600", {"fault": {**ABORT, "http_status": 600}}, "fault.http_status", "599"),
    ("http_status 199", {"fault": {**ABORT, "http_status": 199}}, "fault.http_status", "200"),
    ("http_status 0", {"fault": {**ABORT, "http_status": 0}}, "fault.http_status", "200"),
    ("grpc_status 17", {"fault": {**ABORT, "grpc_status": 17}}, "fault.grpc_status", "16"),
    ("bandwidth without kbps", {"fault": {"type": "bandwidth"}}, "fault.kbps", "kbps"),
    ("bandwidth kbps 0", {"fault": {"type": "bandwidth", "kbps": 0}}, "fault.kbps", "at least 1"),
    ("percentage 0", {"fault.percentage": 0}, "fault.percentage", "greater than 0"),
    ("percentage 101", {"fault.percentage": 101}, "fault.percentage", "at most 100"),
    ("percentage negative", {"fault.percentage": -10}, "fault.percentage", "greater than 0"),
    ("percentage NaN", {"fault.percentage": "NaN"}, "fault.percentage", "at most 100"),
    ("max_active 0", {"fault.max_active": 0}, "fault.max_active", "at least 1"),
    (
        "latency field on abort",
        {"fault": {**ABORT, "http_status": 503, "p50_ms": 200}},
        "fault.p50_ms",
        "not a field of a abort fault",
    ),
    (
        "abort field on latency",
        {"fault.http_status": 503},
        "fault.http_status",
        "not a field of a latency fault",
    ),
    (
        "latency field on bandwidth",
        {"fault": {"type": "bandwidth", "kbps": 64, "fixed_ms": 5}},
        "fault.fixed_ms",
        "not a field",
    ),
    ("duration 0", {"duration_seconds": 0}, "duration_seconds", "greater than 0"),
    ("duration negative", {"duration_seconds": -30}, "duration_seconds", "greater than 0"),
    ("duration over 24h", {"duration_seconds": 86_401}, "duration_seconds", "at most 86400"),
    ("duration NaN", {"duration_seconds": "NaN"}, "duration_seconds", "greater than 0"),
    ("steady_state missing slo", {"steady_state.slo": DELETE}, "steady_state.slo", "required"),
    ("steady_state missing min", {"steady_state.min": DELETE}, "steady_state.min", "required"),
    ("steady_state min NaN", {"steady_state.min": "NaN"}, "steady_state.min", "required"),
    (
        "abort_after 0",
        {"steady_state.abort_after": 0},
        "steady_state.abort_after",
        "greater than 0",
    ),
    (
        "abort_after missing",
        {"steady_state.abort_after": DELETE},
        "steady_state.abort_after",
        "required",
    ),
    (
        "abort_after negative",
        {"steady_state.abort_after": -1},
        "steady_state.abort_after",
        "greater than 0",
    ),
    ("compare bogus", {"steady_state.compare": "bogus"}, "steady_state.compare", "control"),
]


@pytest.mark.parametrize(
    ("changes", "path", "reason"),
    [pytest.param(changes, path, reason, id=name) for name, changes, path, reason in BAD],
)
def test_bad_input(changes: dict[str, Any], path: str, reason: str) -> None:
    problems = problems_of(modified(changes))
    reasons = [r for p, r in problems if p == path]
    assert reasons, f"no problem at {path!r}: {problems}"
    assert any(reason in r for r in reasons), f"{path}: {reasons} lacks {reason!r}"


@pytest.mark.parametrize(
    ("changes", "path"),
    [pytest.param(changes, path, id=name) for name, changes, path, _ in BAD],
)
def test_bad_input_reports_only_its_own_field(changes: dict[str, Any], path: str) -> None:
    """One mistake yields problems for that field only, not knock-on noise elsewhere."""
    problems = problems_of(modified(changes))
    assert {p for p, _ in problems} == {path}, problems


def test_unknown_slo_with_catalogue() -> None:
    problems = problems_of(modified({"steady_state.slo": "checkout-latency"}), SLOS)
    assert len(problems) == 1
    path, reason = problems[0]
    assert path == "steady_state.slo"
    assert "checkout-latency" in reason
    assert "merchant-write-success" in reason


def test_invalid_request_message_lists_every_problem() -> None:
    with pytest.raises(InvalidRequest) as info:
        validate(modified({"target.max_pods": 0, "duration_seconds": 0}))
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "target.max_pods: " in message
    assert "duration_seconds: " in message


def test_several_problems_are_all_reported() -> None:
    doc = modified(
        {
            "target.service": "billing",
            "target.selector": "a=b,,c=d",
            "target.max_pods": 0,
            "target.match": {"path_prefix": "x", "methods": ["FETCH"]},
            "fault": {"type": "latency", "p50_ms": 300, "p99_ms": 100, "percentage": 0},
            "duration_seconds": -1,
            "steady_state": {"slo": "nope", "abort_after": 0, "compare": "bogus"},
            "hypothesis": "",
            "owner": DELETE,
        }
    )
    problems = problems_of(doc, SLOS)
    assert {path for path, _ in problems} == {
        "target.service",
        "target.selector",
        "target.max_pods",
        "target.match.path_prefix",
        "target.match.methods",
        "fault.p99_ms",
        "fault.percentage",
        "duration_seconds",
        "steady_state.slo",
        "steady_state.min",
        "steady_state.abort_after",
        "steady_state.compare",
        "hypothesis",
        "owner",
    }


def test_empty_request_reports_every_required_section() -> None:
    problems = problems_of({})
    assert {path for path, _ in problems} == {
        "target",
        "fault",
        "duration_seconds",
        "steady_state",
        "hypothesis",
        "owner",
    }


def test_namespace_narrows_the_target_and_must_be_a_namespace_name() -> None:
    assert validate(EXAMPLE).target.namespace is None
    assert validate(modified({"target.namespace": "payments"})).target.namespace == "payments"
    for bad in ("Payments", "-payments", "pay_ments", "a" * 64):
        assert problems_of(modified({"target.namespace": bad})) == [
            ("target.namespace", "must be a DNS label (a Kubernetes namespace name)")
        ]


def test_without_a_mesh_any_service_and_an_envoy_cluster_name_as_upstream() -> None:
    """Overlay mode: services are whatever connects, and `upstream` is the Envoy cluster
    name the sidecar uses for that dependency (Istio's, here), matched exactly."""
    cluster = "outbound|8080||fraud-scoring.payments.svc.cluster.local"
    doc = modified({"target.service": "reviews", "target.upstream": cluster})
    spec = validate_request(parse(doc), None, None)
    assert (spec.target.service, spec.target.scope.upstream) == ("reviews", cluster)
