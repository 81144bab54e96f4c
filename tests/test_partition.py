"""The `partition` fault kind: validation, rendering, and a real partition measured in
traffic through real sidecars' egress listeners.

One mesh (7 Envoys, 7 apps, no load) and one in-process control server serve the module;
every real-Envoy test withdraws what it injected and checks that no sidecar still
carries a fault.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import json_format

from faultplane.api.validate import InvalidRequest, validate_request
from faultplane.demo.launcher import MeshRun
from faultplane.demo.ports import PortAllocator
from faultplane.faults.kind import Problems
from faultplane.faults.message import describe_fault
from faultplane.faults.partition import PARTITION, Partition
from faultplane.faults.registry import kind_of
from faultplane.model.mesh import load_mesh
from faultplane.model.spec import FaultSpec
from faultplane.render.faults import INJECTION_HEADER
from faultplane.render.resources import PARTITION_HEADER
from faultplane.server.control import ControlServer
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests.conftest import MESH_FILE, server_config
from tests.helpers import (
    admin_json,
    fault_runtime_keys,
    faulted_routes,
    injection_request,
    rpc_error,
    send,
    wait_state,
)

SOUTH = ["payments-api-1", "payments-api-2", "payments-api-3"]
NORTH = "payments-api-4"
SOUTH_TO_LEDGER = {"selector": "shard=south-1", "max_pods": 3, "upstream": "ledger"}


def check(target: dict[str, Any], fault: dict[str, Any]) -> list[tuple[str, str]]:
    """The problems PARTITION.check_request finds in a part given as documents."""
    problems = Problems()
    PARTITION.check_request(
        json_format.ParseDict(target, pb.Target()),
        json_format.ParseDict(fault, pb.Fault()),
        problems,
    )
    return problems.found


# --- validation ------------------------------------------------------------------------------


def test_a_partition_without_an_upstream_is_refused_naming_target_upstream() -> None:
    [(path, reason)] = check({"service": "payments-api"}, {"type": "partition"})
    assert path == "target.upstream"
    assert "required for a partition" in reason


def test_a_partition_refuses_any_percentage_but_100() -> None:
    [(path, reason)] = check(SOUTH_TO_LEDGER, {"type": "partition", "percentage": 30})
    assert path == "fault.percentage"
    assert "100 %" in reason and "not 30" in reason
    assert check(SOUTH_TO_LEDGER, {"type": "partition", "percentage": 100}) == []
    assert check(SOUTH_TO_LEDGER, {"type": "partition"}) == []


def test_a_partition_refuses_a_ramp_but_takes_a_burst() -> None:
    ramp = {"kind": "ramp", "from_percentage": 5, "to_percentage": 50, "steps": 5}
    burst = {"kind": "burst", "on_seconds": 5, "off_seconds": 5}
    assert [p for p, _ in check(SOUTH_TO_LEDGER, {"type": "partition", "pattern": ramp})] == [
        "fault.pattern.kind"
    ]
    assert check(SOUTH_TO_LEDGER, {"type": "partition", "pattern": burst}) == []


def test_a_part_prefix_names_the_part_in_a_multi_part_request() -> None:
    problems = Problems()
    PARTITION.check_request(pb.Target(), pb.Fault(type="partition"), problems, "faults[1].")
    assert [path for path, _ in problems.found] == ["faults[1].target.upstream"]


@pytest.mark.parametrize(
    ("fault", "problem"),
    [
        (
            {"type": "partition", "http_status": 503, "grpc_status": 14},
            ("fault.grpc_status", "not both"),
        ),
        ({"type": "partition", "http_status": 99}, ("fault.http_status", "between 200 and 599")),
        ({"type": "partition", "grpc_status": 17}, ("fault.grpc_status", "between 0 and 16")),
        ({"type": "partition", "p50_ms": 200}, ("fault.p50_ms", "not a field of a partition")),
    ],
    ids=["both-statuses", "http-out-of-range", "grpc-out-of-range", "foreign-field"],
)
def test_bad_statuses_are_refused_at_the_edge_naming_the_field(
    fault: dict[str, Any], problem: tuple[str, str]
) -> None:
    request = injection_request(target=SOUTH_TO_LEDGER, fault=fault)
    with pytest.raises(InvalidRequest) as refused:
        validate_request(request, None, None)
    [(path, reason)] = refused.value.problems
    assert path == problem[0] and problem[1] in reason, refused.value.problems


def test_statuses_default_to_503_and_a_grpc_status_is_kept() -> None:
    spec = validate_request(
        injection_request(target=SOUTH_TO_LEDGER, fault={"type": "partition"}), None, None
    )
    assert spec.fault.kind == Partition(http_status=503)
    assert spec.fault.percentage == 100
    assert kind_of(spec.fault.kind) is PARTITION
    grpc_partition = pb.Fault(type="partition", grpc_status=14)
    assert describe_fault(grpc_partition) == "partition grpc 14"
    assert describe_fault(pb.Fault(type="partition")) == "partition http 503"


# --- rendering -------------------------------------------------------------------------------


def test_renders_one_abort_slot_at_zero_switched_to_100_by_its_runtime_key() -> None:
    [slot] = PARTITION.render("inj1", FaultSpec(Partition(), 100.0))
    abort = slot.config.abort
    assert abort.http_status == 503
    assert abort.percentage.numerator == 0  # armed, off until the runtime key says so
    assert slot.config.abort_percent_runtime == "faultplane.inj1.0.abort_pct"
    assert slot.runtime == {"faultplane.inj1.0.abort_pct": 100.0}

    [grpc_slot] = PARTITION.render("inj2", FaultSpec(Partition(None, 14), 100.0))
    assert grpc_slot.config.abort.grpc_status == 14
    assert not grpc_slot.config.abort.HasField("http_status")


# --- real Envoy ------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mesh_run(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MeshRun]:
    mesh = load_mesh(MESH_FILE).with_ports(PortAllocator())
    server = ControlServer(server_config(mesh, deadman_ttl=5.0, ack_timeout=5.0))
    await server.start()
    try:
        async with MeshRun(
            MESH_FILE, tmp_path_factory.mktemp("mesh"), mesh=mesh, spawn_server=False, load=False
        ) as run:
            yield run
    finally:
        await server.stop(grace=0)


@pytest_asyncio.fixture(loop_scope="module")
async def stub(mesh_run: MeshRun) -> AsyncIterator[faultplane_pb2_grpc.FaultServiceStub]:
    """The operator API; after the test, everything withdrawn and checked gone from every
    sidecar (runtime keys and faulted routes)."""
    async with grpc.aio.insecure_channel(mesh_run.api_address) as channel:
        api = faultplane_pb2_grpc.FaultServiceStub(channel)
        yield api
        await api.AbortAllInjections(pb.AbortAllInjectionsRequest(reason="test cleanup"))
        for pod in mesh_run.mesh.pods:
            admin = f"127.0.0.1:{pod.ports.admin}"
            assert await fault_runtime_keys(admin) == [], pod.name
            assert all(not slots for slots in (await faulted_routes(admin)).values()), pod.name


async def partition(
    stub: faultplane_pb2_grpc.FaultServiceStub, fault: dict[str, Any], targets: list[str] = SOUTH
) -> str:
    """Inject a partition of shard south-1 from ledger; its id, once every one of
    `targets` ACKed (the evidence of the transition to ACTIVE names each)."""
    request = injection_request(target=SOUTH_TO_LEDGER, fault=fault)
    created = await stub.CreateInjection(request, timeout=20)
    injection = await wait_state(stub, created.id, {pb.ACTIVE, pb.FAILED})
    assert injection.state == pb.ACTIVE, injection
    assert sorted(injection.targets) == sorted(targets)
    [activation] = [t for t in injection.transitions if t.to_state == pb.ACTIVE]
    assert {e.sidecar for e in activation.evidence} >= set(targets), activation
    return created.id


def egress(run: MeshRun, pod: str) -> str:
    found = run.mesh.pod(pod)
    assert found is not None
    return f"http://127.0.0.1:{found.ports.egress}/score"


# Only the real-Envoy tests run on the module's event loop (the mesh's).
on_mesh_loop = pytest.mark.asyncio(loop_scope="module")


@on_mesh_loop
async def test_partition_from_south_to_ledger_fails_only_south_calls_to_ledger(
    mesh_run: MeshRun, stub: faultplane_pb2_grpc.FaultServiceStub
) -> None:
    injection_id = await partition(stub, {"type": "partition"})

    for pod in SOUTH:
        cut = await send(egress(mesh_run, pod), 20, host="ledger")
        assert Counter(r.status for r in cut) == {503: 20}, pod
        assert all(r.headers.get(INJECTION_HEADER) == injection_id for r in cut), pod
        other = await send(egress(mesh_run, pod), 20, host="fraud-scoring")
        assert Counter(r.status for r in other) == {200: 20}, pod
    north = await send(egress(mesh_run, NORTH), 20, host="ledger")
    assert Counter(r.status for r in north) == {200: 20}
    assert not any(INJECTION_HEADER in r.headers for r in north)


@on_mesh_loop
async def test_a_grpc_partition_answers_unavailable_and_heals_on_abort(
    mesh_run: MeshRun, stub: faultplane_pb2_grpc.FaultServiceStub
) -> None:
    injection_id = await partition(stub, {"type": "partition", "grpc_status": 14})
    url = egress(mesh_run, SOUTH[0])

    grpc_call = {"content-type": "application/grpc"}

    cut = await send(url, 10, host="ledger", method="POST", headers=grpc_call)
    # A gRPC abort is a trailers-only reply: HTTP 200, the status in grpc-status.
    assert {(r.status, r.headers.get("grpc-status")) for r in cut} == {(200, "14")}
    assert all(r.headers.get(INJECTION_HEADER) == injection_id for r in cut)

    # Returns once every target ACKed the withdrawal: the next call is already clean.
    await stub.AbortInjection(pb.AbortInjectionRequest(id=injection_id, reason="heal"))
    healed = await send(url, 10, host="ledger", method="POST", headers=grpc_call)
    assert {(r.status, r.headers.get("grpc-status")) for r in healed} == {(200, None)}


@pytest.mark.parametrize(
    ("target", "fault", "field"),
    [
        ({"upstream": None}, {"type": "partition"}, "target.upstream"),
        (SOUTH_TO_LEDGER, {"type": "partition", "percentage": 30}, "fault.percentage"),
    ],
)
def test_the_edge_refuses_a_partition_without_upstream_or_below_100_percent(
    target: dict[str, Any], fault: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        validate_request(injection_request(target=target, fault=fault), None, None)
    assert [path for path, _ in refused.value.problems] == [field]


# --- directions on real Envoy ----------------------------------------------------------------

LEDGER = "ledger-1"


async def aborts(run: MeshRun, pod: str, listener: str) -> int:
    """How many aborts the fault filters of `pod`'s `listener` (ingress|egress) injected."""
    found = run.mesh.pod(pod)
    assert found is not None
    stats = await admin_json(f"127.0.0.1:{found.ports.admin}", "/stats?format=json")
    name = f"http.{listener}.fault.aborts_injected"
    return sum(s.get("value", 0) for s in stats["stats"] if s.get("name") == name)


async def marked_routes(run: MeshRun) -> list[str]:
    """Every pod whose routes add the partition mark to requests (config_dump)."""
    marked = []
    for pod in run.mesh.pods:
        dump = await admin_json(
            f"127.0.0.1:{pod.ports.admin}", "/config_dump?resource=dynamic_route_configs"
        )
        if f'"{PARTITION_HEADER}"' in json.dumps(
            [r.get("request_headers_to_add") for r in _routes(dump)]
        ):
            marked.append(pod.name)
    return marked


def _routes(dump: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        route
        for entry in dump.get("configs", [])
        for vhost in entry["route_config"].get("virtual_hosts", [])
        for route in vhost.get("routes", [])
    ]


def ingress_url(run: MeshRun, pod: str) -> str:
    found = run.mesh.pod(pod)
    assert found is not None
    return f"http://127.0.0.1:{found.ports.ingress}/score"


@on_mesh_loop
async def test_an_ingress_partition_is_refused_by_ledgers_inbound_for_south_only(
    mesh_run: MeshRun, stub: faultplane_pb2_grpc.FaultServiceStub
) -> None:
    ingress = {"type": "partition", "direction": "ingress"}
    plan = await stub.PlanInjection(injection_request(target=SOUTH_TO_LEDGER, fault=ingress))
    planned = {s.sidecar: s.route_config_json for s in plan.sidecars}
    assert sorted(planned) == sorted([*SOUTH, LEDGER])
    assert all(PARTITION_HEADER in planned[pod] for pod in [*SOUTH, LEDGER])

    injection_id = await partition(stub, ingress, [*SOUTH, LEDGER])
    assert sorted(await marked_routes(mesh_run)) == SOUTH
    south_before = [await aborts(mesh_run, pod, "egress") for pod in SOUTH]
    ledger_before = await aborts(mesh_run, LEDGER, "ingress")

    for pod in SOUTH:
        cut = await send(egress(mesh_run, pod), 20, host="ledger")
        assert Counter(r.status for r in cut) == {503: 20}, pod
        assert all(injection_id in r.headers.get(INJECTION_HEADER, "") for r in cut), pod
    # Refused on ledger's inbound, not on south's egress.
    assert await aborts(mesh_run, LEDGER, "ingress") == ledger_before + 60
    assert [await aborts(mesh_run, pod, "egress") for pod in SOUTH] == south_before

    north = await send(egress(mesh_run, NORTH), 20, host="ledger")
    assert Counter(r.status for r in north) == {200: 20}
    # North's sidecar strips a mark its app forges; a direct caller is not a sidecar.
    forged = {PARTITION_HEADER: injection_id}
    north_forged = await send(egress(mesh_run, NORTH), 10, host="ledger", headers=forged)
    assert Counter(r.status for r in north_forged) == {200: 10}
    direct = await send(ingress_url(mesh_run, LEDGER), 10)
    assert Counter(r.status for r in direct) == {200: 10}

    # Withdrawn on both sides once AbortInjection returns: marks gone, calls pass.
    await stub.AbortInjection(pb.AbortInjectionRequest(id=injection_id, reason="heal"))
    assert await marked_routes(mesh_run) == []
    healed = await send(egress(mesh_run, SOUTH[0]), 10, host="ledger")
    assert Counter(r.status for r in healed) == {200: 10}


@on_mesh_loop
async def test_a_both_partition_aborts_on_south_egress_and_arms_ledgers_inbound(
    mesh_run: MeshRun, stub: faultplane_pb2_grpc.FaultServiceStub
) -> None:
    injection_id = await partition(
        stub, {"type": "partition", "direction": "both"}, [*SOUTH, LEDGER]
    )
    ledger_admin = f"127.0.0.1:{mesh_run.mesh.pods[-1].ports.admin}"
    assert mesh_run.mesh.pods[-1].name == LEDGER
    assert (await faulted_routes(ledger_admin))["ingress"] != []
    assert await fault_runtime_keys(ledger_admin) == [f"faultplane.{injection_id}.1.0.abort_pct"]
    south_before = await aborts(mesh_run, SOUTH[0], "egress")

    cut = await send(egress(mesh_run, SOUTH[0]), 20, host="ledger")
    assert Counter(r.status for r in cut) == {503: 20}
    assert await aborts(mesh_run, SOUTH[0], "egress") == south_before + 20
    north = await send(egress(mesh_run, NORTH), 20, host="ledger")
    assert Counter(r.status for r in north) == {200: 20}

    await stub.AbortInjection(pb.AbortInjectionRequest(id=injection_id, reason="heal"))
    assert await fault_runtime_keys(ledger_admin) == []
    healed = await send(egress(mesh_run, SOUTH[0]), 10, host="ledger")
    assert Counter(r.status for r in healed) == {200: 10}


@on_mesh_loop
async def test_an_ingress_partition_holds_the_upstreams_inbound_scope(
    mesh_run: MeshRun, stub: faultplane_pb2_grpc.FaultServiceStub
) -> None:
    await partition(stub, {"type": "partition", "direction": "ingress"}, [*SOUTH, LEDGER])
    latency = injection_request(
        target={"service": "ledger", "selector": "", "max_pods": 1, "upstream": None},
        fault={"type": "latency", "fixed_ms": 10},
    )
    refused = await rpc_error(stub.CreateInjection(latency, timeout=20))
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert LEDGER in (refused.details() or "") and "same traffic scope" in (refused.details() or "")
