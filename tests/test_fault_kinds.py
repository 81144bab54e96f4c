"""Fault kinds: one module each, registered in one place, read from either form of
`Fault` (flat `type` + fields, or one member of the `kind` oneof).

- A kind defined in a test module (tests/fixed_delay_kind.py) and registered with one
  line is validated, planned, created and described through the real API.
- The per-kind form gives the same InjectionSpec as the flat form, for every kind, from
  the API message and from the CLI's document reader, and survives the store.
- Mixed forms, two oneof members and unknown types are refused naming the field.
- Tables show an unknown type as itself, never as another kind.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import json_format

from faultplane.api.validate import InvalidRequest, validate_request
from faultplane.cli.document import DocumentError, request_from_document
from faultplane.cli.tables import fault_summary, injections_table
from faultplane.faults.registry import register, unregister
from faultplane.lifecycle.approval import ApprovalPolicy
from faultplane.model.mesh import Mesh, load_mesh
from faultplane.model.spec import InjectionSpec
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests.conftest import server_config
from tests.fake_sidecar import start_with_sidecars
from tests.fixed_delay_kind import FIXED_DELAY
from tests.helpers import EXAMPLE, injection_request, rpc_error

ROOT = Path(__file__).resolve().parent.parent
MESH = load_mesh(ROOT / "envoy-configs" / "mesh.yaml")
INBOUND = {"selector": "", "max_pods": 4, "upstream": None}

# (flat form, per-kind form) of the same fault, for every kind.
BOTH_FORMS = [
    ({"type": "latency", "fixed_ms": 150}, {"latency": {"fixed_ms": 150}}),
    ({"type": "latency", "p50_ms": 75}, {"latency": {"p50_ms": 75}}),
    (
        {"type": "latency", "p50_ms": 200, "p99_ms": 500, "percentage": 30},
        {"latency": {"p50_ms": 200, "p99_ms": 500}, "percentage": 30},
    ),
    ({"type": "abort", "http_status": 503}, {"abort": {"http_status": 503}}),
    (
        {"type": "abort", "grpc_status": 0, "max_active": 2},
        {"abort": {"grpc_status": 0}, "max_active": 2},
    ),
    ({"type": "bandwidth", "kbps": 64}, {"bandwidth": {"kbps": 64}}),
]
FORM_IDS = ["fixed", "p50", "p50-p99", "http", "grpc-0", "bandwidth"]


def document(fault: dict[str, Any]) -> dict[str, Any]:
    return {**copy.deepcopy(EXAMPLE), "fault": fault}


def spec_of(fault: dict[str, Any]) -> InjectionSpec:
    request = json_format.ParseDict(document(fault), pb.InjectionRequest())
    return validate_request(request, MESH, None)


def problems_of(fault: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(InvalidRequest) as info:
        spec_of(fault)
    return info.value.problems


@pytest.fixture
def fixed_delay() -> Iterator[None]:
    register(FIXED_DELAY)  # the one registration line a new kind needs
    yield
    unregister(FIXED_DELAY.name)


@pytest_asyncio.fixture
async def stub(mesh: Mesh, tmp_path: Path) -> AsyncIterator[faultplane_pb2_grpc.FaultServiceStub]:
    """An in-process server with payments-api's four pods as fake sidecars."""
    async with AsyncExitStack() as stack:
        _, channel = await start_with_sidecars(
            stack,
            server_config(mesh, db_path=tmp_path / "faultplane.db"),
            list(mesh.services["payments-api"].pods),
        )
        yield faultplane_pb2_grpc.FaultServiceStub(channel)


# --- (a) a kind added in one module ---------------------------------------------------------


# `fixed_delay` comes first: it is registered before the server starts, and unregistered
# after the server has stopped.
async def test_a_kind_in_its_own_module_is_validated_planned_created_and_described(
    fixed_delay: None, stub: faultplane_pb2_grpc.FaultServiceStub
) -> None:
    fault = {"type": "fixed_delay", "fixed_ms": 250, "percentage": 30}
    request = injection_request(target=INBOUND, fault=fault)

    plan = await stub.PlanInjection(request, timeout=20)

    assert len(plan.sidecars) == 4
    for sidecar in plan.sidecars:
        assert sidecar.route_config == "ingress"
        ((key, percent),) = sidecar.runtime.items()
        assert key.startswith("faultplane.") and key.endswith(".0.delay_pct")
        assert percent == pytest.approx(30.0)
        assert f'"delay_percent_runtime": "{key}"' in sidecar.route_config_json
        assert '"fixed_delay": "0.250s"' in sidecar.route_config_json

    for bad, problem in [
        ({**fault, "fixed_ms": 0}, "fault.fixed_ms: a fixed_delay fault needs fixed_ms from 1"),
        ({**fault, "p50_ms": 5}, "fault.p50_ms: not a field of a fixed_delay fault"),
    ]:
        error = await rpc_error(stub.PlanInjection(injection_request(target=INBOUND, fault=bad)))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details().startswith(problem), error.details()

    created = await stub.CreateInjection(request, timeout=20)
    listed = await stub.ListInjections(pb.ListInjectionsRequest(), timeout=20)
    assert [i.id for i in listed.injections] == [created.id]
    assert "fixed_delay 250ms on 30% inbound" in injections_table(listed.injections)


def test_an_unregistered_kind_is_unknown() -> None:
    assert problems_of({"type": "fixed_delay", "fixed_ms": 250}) == [
        ("fault.type", "must be one of abort, bandwidth, latency, partition")
    ]


# --- (b) the per-kind form is the flat form -------------------------------------------------


@pytest.mark.parametrize(("flat", "per_kind"), BOTH_FORMS, ids=FORM_IDS)
def test_per_kind_form_gives_the_same_spec_as_the_flat_form(
    flat: dict[str, Any], per_kind: dict[str, Any]
) -> None:
    assert spec_of(per_kind) == spec_of(flat)


@pytest.mark.parametrize(("flat", "per_kind"), BOTH_FORMS, ids=FORM_IDS)
def test_both_forms_read_from_a_document_give_the_same_spec(
    flat: dict[str, Any], per_kind: dict[str, Any]
) -> None:
    """The CLI's document walk knows the oneof members and their fields."""
    specs = [
        validate_request(request_from_document(document(fault), "doc.json"), MESH, None)
        for fault in (flat, per_kind)
    ]
    assert specs[0] == specs[1] == spec_of(flat)


@pytest.mark.parametrize(("flat", "per_kind"), BOTH_FORMS, ids=FORM_IDS)
def test_both_forms_round_trip_through_a_stored_document(
    flat: dict[str, Any], per_kind: dict[str, Any]
) -> None:
    """As the store keeps a request (MessageToDict, JSON) and re-validates it on load."""
    for fault in (flat, per_kind):
        request = json_format.ParseDict(document(fault), pb.InjectionRequest())
        stored = json.loads(
            json.dumps(json_format.MessageToDict(request, preserving_proto_field_name=True))
        )
        assert set(stored["fault"]) == set(fault)  # the form it was given in
        loaded = json_format.ParseDict(stored, pb.InjectionRequest())
        assert validate_request(loaded, None, None) == spec_of(flat)


@pytest.mark.parametrize(
    ("fault", "path", "reason"),
    [
        ({"latency": {}}, "fault.latency.p50_ms", "a latency fault needs fixed_ms or p50_ms"),
        (
            {"latency": {"p50_ms": 200, "p99_ms": 100}},
            "fault.latency.p99_ms",
            "must be at least 1 ms above p50_ms (200)",
        ),
        (
            {"latency": {"fixed_ms": 100, "p50_ms": 100}},
            "fault.latency.fixed_ms",
            "give fixed_ms, or p50_ms (and optionally p99_ms), not both",
        ),
        ({"abort": {"http_status": 600}}, "fault.abort.http_status", "must be between 200 and 599"),
        ({"abort": {"grpc_status": 17}}, "fault.abort.grpc_status", "must be between 0 and 16"),
        ({"bandwidth": {}}, "fault.bandwidth.kbps", "a bandwidth fault needs kbps of at least 1"),
    ],
)
def test_per_kind_form_names_fields_inside_their_member(
    fault: dict[str, Any], path: str, reason: str
) -> None:
    assert problems_of(fault) == [(path, reason)]


# --- (c) one form per fault -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "problem"),
    [
        (
            {"type": "latency", "latency": {"p50_ms": 200}},
            "fault.type: give type with its fields, or fault.latency, not both",
        ),
        (
            {"abort": {"http_status": 503}, "p50_ms": 200},
            "fault.p50_ms: the fault is given as fault.abort: its fields go inside it",
        ),
        ({"type": "blackhole"}, "fault.type: must be one of abort, bandwidth, latency, partition"),
        ({"percentage": 50}, "fault.type: must be one of abort, bandwidth, latency, partition"),
    ],
    ids=["type-and-member", "flat-field-beside-member", "unknown-type", "neither"],
)
async def test_mixed_forms_and_unknown_types_are_invalid_argument_naming_the_field(
    stub: faultplane_pb2_grpc.FaultServiceStub, fault: dict[str, Any], problem: str
) -> None:
    request = injection_request(target=INBOUND, fault=fault)
    for call in (stub.PlanInjection, stub.CreateInjection):
        error = await rpc_error(call(request, timeout=20))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details().startswith(problem), error.details()


def test_two_oneof_members_in_a_document_are_refused_naming_the_second() -> None:
    """A message cannot hold two members of a oneof (the wire keeps the last), so a
    document with two is refused before it becomes a request."""
    fault = {"latency": {"p50_ms": 200}, "abort": {"http_status": 503}}
    with pytest.raises(DocumentError) as info:
        request_from_document(document(fault), "doc.json")
    assert info.value.problems == [
        ("fault.abort", "give only one of latency, abort, bandwidth (found fault.latency too)")
    ]


def test_a_per_kind_document_is_walked_for_unknown_fields() -> None:
    with pytest.raises(DocumentError) as info:
        request_from_document(document({"latency": {"p50": 200}}), "doc.json")
    ((path, reason),) = info.value.problems
    assert path == "fault.latency.p50"
    assert reason.startswith("unknown field (did you mean p50_ms? fault.latency has:")


# --- (d) tables -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "shown"),
    [
        ({"type": "latency", "fixed_ms": 150}, "latency 150ms"),
        ({"type": "latency", "p50_ms": 200}, "latency 200ms"),
        ({"latency": {"p50_ms": 200, "p99_ms": 500}}, "latency p50 200ms p99 500ms"),
        ({"type": "abort", "http_status": 503, "percentage": 30}, "abort http 503 on 30%"),
        ({"abort": {"grpc_status": 14}}, "abort grpc 14"),
        ({"type": "bandwidth", "kbps": 64}, "bandwidth 64kbps"),
        ({"bandwidth": {"kbps": 64}}, "bandwidth 64kbps"),
    ],
)
def test_tables_describe_each_kind_in_either_form(fault: dict[str, Any], shown: str) -> None:
    assert fault_summary(injection_request(target=INBOUND, fault=fault)) == f"{shown} inbound"


def test_tables_show_an_unknown_type_as_itself() -> None:
    request = injection_request(target=INBOUND, fault={"type": "blackhole", "kbps": 1})
    assert fault_summary(request) == "blackhole inbound"
    table = injections_table([pb.Injection(id="inj-1", state=pb.ACTIVE, request=request)])
    assert "blackhole inbound" in table
    assert "bandwidth" not in table


# --- the store ------------------------------------------------------------------------------


async def test_both_forms_load_back_after_a_restart(mesh: Mesh, tmp_path: Path) -> None:
    """Injections waiting for approval are reloaded, and re-validated, from the store."""
    config = server_config(mesh, db_path=tmp_path / "faultplane.db", approval=ApprovalPolicy(0))
    pods = list(mesh.services["payments-api"].pods)
    flat, per_kind = BOTH_FORMS[2]
    # Different traffic scopes, so that both are admitted.
    requests = [
        injection_request(target=INBOUND, fault=flat),
        injection_request(target={**INBOUND, "upstream": "fraud-scoring"}, fault=per_kind),
    ]
    async with AsyncExitStack() as stack:
        _, channel = await start_with_sidecars(stack, config, pods)
        stub = faultplane_pb2_grpc.FaultServiceStub(channel)
        created = [await stub.CreateInjection(request, timeout=20) for request in requests]
    assert {c.state for c in created} == {pb.PENDING_APPROVAL}

    async with AsyncExitStack() as stack:
        _, channel = await start_with_sidecars(stack, config, pods)
        stub = faultplane_pb2_grpc.FaultServiceStub(channel)
        found = [
            await stub.GetInjection(pb.GetInjectionRequest(id=c.id), timeout=20) for c in created
        ]
    assert [f.state for f in found] == [pb.PENDING_APPROVAL, pb.PENDING_APPROVAL]
    assert [f.request.fault for f in found] == [r.fault for r in requests]
    assert [fault_summary(f.request) for f in found] == [
        "latency p50 200ms p99 500ms on 30% inbound",
        "latency p50 200ms p99 500ms on 30% -> fraud-scoring",
    ]
