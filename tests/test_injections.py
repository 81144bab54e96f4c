"""The fault lifecycle against the real demo mesh: faults measured through real sidecars.

One mesh (7 Envoys, 7 apps) and one in-process control server serve the whole module;
every test withdraws what it injected (the `clean` fixture aborts all and checks it).
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio
from envoy.config.route.v3 import route_pb2

from faultplane.demo.launcher import MeshRun
from faultplane.demo.ports import PortAllocator
from faultplane.demo.processes import wait_until
from faultplane.model.mesh import load_mesh
from faultplane.render.faults import INJECTION_HEADER
from faultplane.server.control import ControlServer
from faultplane.store import StoreError
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from faultplane.xds import types
from faultplane.xds.server import AdsServer
from tests.conftest import MESH_FILE, server_config
from tests.helpers import (
    fault_runtime_keys,
    faulted_routes,
    injection_request,
    percentile,
    rpc_error,
    send,
    wait_state,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

PAYMENTS = ["payments-api-1", "payments-api-2", "payments-api-3", "payments-api-4"]
SOUTH = PAYMENTS[:3]
ALL_PAYMENTS = {"selector": "", "max_pods": 4}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mesh_run(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MeshRun]:
    mesh = load_mesh(MESH_FILE).with_ports(PortAllocator())
    server = ControlServer(server_config(mesh, deadman_ttl=5.0, ack_timeout=5.0))
    await server.start()
    run_dir = tmp_path_factory.mktemp("mesh")
    try:
        async with MeshRun(MESH_FILE, run_dir, mesh=mesh, spawn_server=False, load=False) as run:
            run.control = server  # type: ignore[attr-defined]
            yield run
    finally:
        await server.stop(grace=0)


@pytest.fixture
def control(mesh_run: MeshRun) -> ControlServer:
    return mesh_run.control  # type: ignore[attr-defined]


@pytest_asyncio.fixture(loop_scope="module")
async def stub(mesh_run: MeshRun) -> AsyncIterator[faultplane_pb2_grpc.FaultServiceStub]:
    async with grpc.aio.insecure_channel(mesh_run.api_address) as channel:
        yield faultplane_pb2_grpc.FaultServiceStub(channel)


@pytest_asyncio.fixture(loop_scope="module", autouse=True)
async def clean(
    mesh_run: MeshRun, stub: faultplane_pb2_grpc.FaultServiceStub
) -> AsyncIterator[None]:
    """After each test: withdraw everything, and check no sidecar still carries a fault."""
    yield
    await stub.AbortAllInjections(pb.AbortAllInjectionsRequest(reason="test cleanup"))
    for pod in mesh_run.mesh.pods:
        admin = f"127.0.0.1:{pod.ports.admin}"
        assert await fault_runtime_keys(admin) == [], pod.name
        assert all(not slots for slots in (await faulted_routes(admin)).values()), pod.name


def ports(run: MeshRun, pod: str):
    found = run.mesh.pod(pod)
    assert found is not None
    return found.ports


async def inject(stub, request: pb.InjectionRequest) -> pb.Injection:
    created = await stub.CreateInjection(request, timeout=10)
    assert created.state == pb.PENDING
    return await wait_state(stub, created.id, {pb.ACTIVE, pb.FAILED})


async def test_fixed_delay_applies_to_calls_to_fraud_scoring_and_not_to_ledger(
    mesh_run: MeshRun, stub
) -> None:
    injection = await inject(
        stub,
        injection_request(
            target={**ALL_PAYMENTS, "upstream": "fraud-scoring"},
            fault={"type": "latency", "fixed_ms": 150},
        ),
    )
    assert injection.state == pb.ACTIVE
    egress = f"http://127.0.0.1:{ports(mesh_run, 'payments-api-1').egress}/score"

    faulted = await send(egress, 20, host="fraud-scoring")
    untouched = await send(egress, 20, host="ledger")

    assert all(r.status == 200 and r.ms >= 150 for r in faulted)
    assert all(r.headers.get(INJECTION_HEADER) == injection.id for r in faulted)
    # Whatever the machine's load, an untouched call never carries the 150 ms delay.
    assert all(r.status == 200 and r.ms < 150 for r in untouched)
    assert all(INJECTION_HEADER not in r.headers for r in untouched)


async def test_latency_distribution_lands_near_requested_p50_and_p99(
    mesh_run: MeshRun, stub
) -> None:
    await inject(
        stub,
        injection_request(
            target={**ALL_PAYMENTS, "upstream": "fraud-scoring"},
            fault={"type": "latency", "p50_ms": 100, "p99_ms": 300},
        ),
    )
    egress = f"http://127.0.0.1:{ports(mesh_run, 'payments-api-2').egress}/score"

    # Unfaulted calls to ledger sent at the same time, through the same sidecar and the
    # same client, measure what a loaded machine adds on its own (CI once saw every call
    # ~60 ms slow): the upper bounds allow that much on top of the requested delay.
    replies, control = await asyncio.gather(
        send(egress, 400, host="fraud-scoring", concurrency=50),
        send(egress, 400, host="ledger", concurrency=50),
    )
    latencies = [r.ms for r in replies]
    load = [r.ms for r in control]

    assert all(r.status == 200 for r in replies + control)
    assert 100 <= percentile(latencies, 0.50) <= 130 + percentile(load, 0.50)
    assert 270 <= percentile(latencies, 0.99) <= 380 + percentile(load, 0.99)


def binomial_bounds(n: int, p: float, sigmas: float = 5.0) -> tuple[float, float]:
    mean, sd = n * p, math.sqrt(n * p * (1 - p))
    return mean - sigmas * sd, mean + sigmas * sd


async def test_abort_http_status_hits_the_requested_share_of_requests(
    mesh_run: MeshRun, stub
) -> None:
    await inject(
        stub,
        injection_request(
            target={**ALL_PAYMENTS, "upstream": "ledger"},
            fault={"type": "abort", "http_status": 503, "percentage": 30},
        ),
    )
    egress = f"http://127.0.0.1:{ports(mesh_run, 'payments-api-3').egress}/entries"

    replies = await send(egress, 600, host="ledger")
    aborted = sum(r.status == 503 for r in replies)

    low, high = binomial_bounds(600, 0.30)
    assert low <= aborted <= high
    assert {r.status for r in replies} == {200, 503}


async def test_abort_grpc_status_answers_grpc_requests_with_that_status(
    mesh_run: MeshRun, stub
) -> None:
    await inject(
        stub,
        injection_request(
            target={**ALL_PAYMENTS, "upstream": "fraud-scoring"},
            fault={"type": "abort", "grpc_status": 14, "percentage": 50},
        ),
    )
    egress = f"http://127.0.0.1:{ports(mesh_run, 'payments-api-1').egress}/fraud.Scoring/Score"

    replies = await send(
        egress, 400, host="fraud-scoring", method="POST",
        headers={"content-type": "application/grpc"},
    )  # fmt: skip
    unavailable = sum(r.headers.get("grpc-status") == "14" for r in replies)

    low, high = binomial_bounds(400, 0.50)
    assert low <= unavailable <= high


async def test_bandwidth_fault_limits_the_response_rate(mesh_run: MeshRun, stub) -> None:
    size = 96 * 1024
    ingress = f"http://127.0.0.1:{ports(mesh_run, 'fraud-scoring-1').ingress}/report?size={size}"
    (before,) = await send(ingress)
    await inject(
        stub,
        injection_request(
            target={"service": "fraud-scoring", "selector": "", "max_pods": 2, "upstream": None},
            fault={"type": "bandwidth", "kbps": 64},
        ),
    )

    (during,) = await send(ingress)

    expected_ms = size / 1024 / 64 * 1000  # 1.5 s at 64 KiB/s
    assert before.size == during.size >= size
    assert before.ms < expected_ms / 3
    assert during.ms >= expected_ms * 0.75


async def test_selector_and_max_pods_fault_exactly_that_many_matching_sidecars(
    mesh_run: MeshRun, stub
) -> None:
    injection = await inject(
        stub,
        injection_request(
            target={"selector": "shard=south-1", "max_pods": 2, "upstream": None},
            fault={"type": "abort", "http_status": 418},
        ),
    )

    assert sorted(injection.matched) == SOUTH
    assert len(injection.targets) == 2 and set(injection.targets) <= set(SOUTH)
    for pod in PAYMENTS:
        pod_ports = ports(mesh_run, pod)
        routes = await faulted_routes(f"127.0.0.1:{pod_ports.admin}")
        (reply,) = await send(f"http://127.0.0.1:{pod_ports.ingress}/merchant-write", method="POST")
        if pod in injection.targets:
            assert routes["ingress"] == ["faultplane.fault.0"], pod
            assert reply.status == 418 and reply.headers[INJECTION_HEADER] == injection.id
        else:
            assert routes["ingress"] == [], pod
            assert reply.status == 200 and INJECTION_HEADER not in reply.headers


async def test_deadline_withdraws_the_fault_and_records_every_ack(mesh_run: MeshRun, stub) -> None:
    injection = await inject(
        stub,
        injection_request(
            target={**ALL_PAYMENTS, "upstream": None},
            fault={"type": "abort", "http_status": 503},
            duration_seconds=3,
        ),
    )
    ingress = f"http://127.0.0.1:{ports(mesh_run, 'payments-api-4').ingress}/merchant-write"
    (during,) = await send(ingress, method="POST")

    done = await wait_state(stub, injection.id, {pb.COMPLETED, pb.ABORTED, pb.FAILED})
    (after,) = await send(ingress, method="POST")

    assert during.status == 503  # 3 s of fault: ample for one request on a loaded box
    assert done.state == pb.COMPLETED and done.reason == "deadline reached"
    assert after.status == 200
    active = done.activated_at.ToNanoseconds()
    assert done.ends_at.ToNanoseconds() - active == 3_000_000_000
    assert done.ended_at.ToNanoseconds() >= done.ends_at.ToNanoseconds()
    assert [pb.State.Name(t.to_state) for t in done.transitions] == [
        "PENDING", "ACTIVE", "COMPLETED",
    ]  # fmt: skip
    for change in done.transitions[1:]:
        answers = {(e.sidecar, e.type, e.outcome) for e in change.evidence}
        assert answers == {(pod, t, "acked") for pod in PAYMENTS for t in ("rds", "rtds")}


async def test_abort_withdraws_at_once(mesh_run: MeshRun, stub) -> None:
    injection = await inject(
        stub,
        injection_request(
            target={**ALL_PAYMENTS, "upstream": None}, fault={"type": "abort", "http_status": 503}
        ),
    )
    ingress = f"http://127.0.0.1:{ports(mesh_run, 'payments-api-1').ingress}/merchant-write"
    assert (await send(ingress, method="POST"))[0].status == 503

    aborted = await stub.AbortInjection(pb.AbortInjectionRequest(id=injection.id, reason="enough"))

    assert aborted.state == pb.ABORTED
    assert aborted.reason == "aborted by operator: enough"
    assert (await send(ingress, method="POST"))[0].status == 200


async def test_abort_all_withdraws_every_live_injection(mesh_run: MeshRun, stub) -> None:
    first = await inject(
        stub,
        injection_request(
            target={**ALL_PAYMENTS, "upstream": None}, fault={"type": "abort", "http_status": 503}
        ),
    )
    second = await inject(
        stub,
        injection_request(
            target={"service": "ledger", "selector": "", "max_pods": 1, "upstream": None},
            fault={"type": "abort", "http_status": 500},
        ),
    )

    reply = await stub.AbortAllInjections(pb.AbortAllInjectionsRequest(reason="rollback"))

    assert sorted(i.id for i in reply.aborted) == sorted([first.id, second.id])
    assert {i.state for i in reply.aborted} == {pb.ABORTED}
    ingress = f"http://127.0.0.1:{ports(mesh_run, 'payments-api-1').ingress}/merchant-write"
    assert (await send(ingress, method="POST"))[0].status == 200


async def test_abort_all_while_20_creates_are_in_flight_leaves_nothing_running(
    mesh_run: MeshRun, stub, control: ControlServer
) -> None:
    before = {i.id for i in control.scheduler.list()}
    creates = [
        asyncio.ensure_future(
            stub.CreateInjection(
                injection_request(
                    target={**ALL_PAYMENTS, "upstream": None, "match": {"path_prefix": f"/p{i}"}},
                    fault={"type": "abort", "http_status": 503},
                    duration_seconds=60,
                ),
                timeout=20,
            )
        )
        for i in range(20)
    ]

    # The button is pressed once the first create is admitted, while the others still are
    # being admitted, recorded or pushed.
    async def admitted() -> bool:
        return any(i.id not in before for i in control.scheduler.list())

    await wait_until(admitted, timeout=10, what="the first admission", interval=0.001)
    await stub.AbortAllInjections(pb.AbortAllInjectionsRequest(reason="big red button"))
    # Creates admitted after the button are fair game: press it again once all returned.
    await asyncio.gather(*creates, return_exceptions=True)
    await stub.AbortAllInjections(pb.AbortAllInjectionsRequest(reason="big red button"))

    assert not [i for i in control.scheduler.list() if i.state.live]
    # (the `clean` fixture then checks that no sidecar carries a fault)


async def test_store_failure_mid_injection_never_keeps_the_fault_on(
    mesh_run: MeshRun, stub, control: ControlServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args, **_kwargs):
        raise StoreError("disk I/O error (injected by the test)")

    store = control.store
    writes = (
        (store.injections, "record_transition"),
        (store.injections, "save"),
        (store.audit, "append"),
    )
    ingress = f"http://127.0.0.1:{ports(mesh_run, 'payments-api-1').ingress}/merchant-write"
    inbound = {**ALL_PAYMENTS, "upstream": None}
    aborted = await inject(
        stub, injection_request(target=inbound, fault={"type": "abort", "http_status": 503})
    )
    for repository, name in writes:
        monkeypatch.setattr(repository, name, broken)
    assert (await send(ingress, method="POST"))[0].status == 503

    await control.scheduler.abort(aborted.id, "store is failing", "test")

    assert (await send(ingress, method="POST"))[0].status == 200  # at once
    monkeypatch.undo()
    timed = await inject(
        stub,
        injection_request(
            target=inbound, fault={"type": "abort", "http_status": 503}, duration_seconds=2
        ),
    )
    for repository, name in writes:
        monkeypatch.setattr(repository, name, broken)
    ends_at = timed.ends_at.ToNanoseconds() / 1e9

    async def clean_traffic() -> bool:
        return (await send(ingress, method="POST"))[0].status == 200

    await wait_until(clean_traffic, timeout=10, what="the deadline withdrawal", interval=0.02)
    # Off by the deadline (give or take the withdrawal's round trip), never later.
    assert time.time() <= ends_at + 2.0


async def test_a_stalled_sidecar_does_not_spin_the_event_loop(
    mesh_run: MeshRun, stub, control: ControlServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    passes: Counter[str] = Counter()
    send_due = AdsServer._send_due

    async def counted(self: AdsServer, node_id: str, *args: Any) -> None:
        passes[node_id] += 1
        await send_due(self, node_id, *args)

    monkeypatch.setattr(AdsServer, "_send_due", counted)
    node = "payments-api-4"  # the only sidecar of shard north-1
    await inject(
        stub,
        injection_request(
            target={"selector": "shard=north-1", "max_pods": 1, "upstream": None},
            fault={"type": "abort", "http_status": 503},
        ),
    )
    envoy = next(p for p in mesh_run.pods if p.pod.name == node).envoy
    stalled_at = time.time()
    os.kill(envoy.process.pid, signal.SIGSTOP)  # alive, connected, answering nothing
    try:
        rtds = control.registry.get(node).status(types.RUNTIME)

        async def lease_resent_unanswered() -> bool:
            return rtds.sent_at is not None and rtds.sent_at > stalled_at

        # The lease is re-sent every ttl/3 (5 s / 3): that response stays unACKed.
        await wait_until(lease_resent_unanswered, 10, what="a lease re-send to the stalled sidecar")
        before = passes[node]
        await asyncio.sleep(2.0)  # the measurement window itself: nothing to wait for
        wakeups = passes[node] - before
    finally:
        os.kill(envoy.process.pid, signal.SIGCONT)
    print(f"stream passes in 2 s with a stalled sidecar: {wakeups}")
    # Before the fix: tens of thousands (the heartbeat re-armed at once, forever).
    assert wakeups <= 2, wakeups


async def test_restarted_sidecar_gets_the_live_fault_back(
    mesh_run: MeshRun, stub, control: ControlServer
) -> None:
    injection = await inject(
        stub,
        injection_request(
            target={**ALL_PAYMENTS, "upstream": None}, fault={"type": "abort", "http_status": 503}
        ),
    )
    pod = next(p for p in mesh_run.pods if p.pod.name == "payments-api-2")
    mesh_run.restart_sidecar(pod.pod.name)
    ingress = f"http://127.0.0.1:{pod.pod.ports.ingress}/merchant-write"

    async def faulted_again() -> bool:
        try:
            (reply,) = await send(ingress, method="POST")
        except OSError:
            return False
        return reply.status == 503 and reply.headers.get(INJECTION_HEADER) == injection.id

    await wait_until(faulted_again, 30, "the restarted sidecar to carry the fault", [pod.envoy])
    current = await stub.GetInjection(pb.GetInjectionRequest(id=injection.id))
    assert current.state == pb.ACTIVE


async def test_nacked_fault_fails_and_is_withdrawn_from_every_target(
    mesh_run: MeshRun, stub, control: ControlServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = control.source.inner  # the sidecars' plane (agents' pods are beside it)
    render = source.render

    def render_rejected_by_payments_api_3(node_id, faults):
        resources = render(node_id, faults)  # shared by every pod: change a copy
        if node_id == "payments-api-3" and faults:
            ingress = route_pb2.RouteConfiguration()
            ingress.CopyFrom(resources[types.ROUTE]["ingress"])
            ingress.virtual_hosts.add(name="duplicate", domains=["*"])  # Envoy rejects this
            resources = {**resources, types.ROUTE: {**resources[types.ROUTE], "ingress": ingress}}
        return resources

    monkeypatch.setattr(source, "render", render_rejected_by_payments_api_3)
    injection = await inject(
        stub,
        injection_request(
            target={**ALL_PAYMENTS, "upstream": None}, fault={"type": "abort", "http_status": 503}
        ),
    )
    done = await wait_state(stub, injection.id, {pb.FAILED})
    monkeypatch.undo()

    assert "payments-api-3 nacked rds" in done.reason
    nacks = [e for t in done.transitions for e in t.evidence if e.outcome == "nacked"]
    assert [(e.sidecar, e.type) for e in nacks] == [("payments-api-3", "rds")]
    assert "duplicate" in nacks[0].error or "domain" in nacks[0].error
    for pod in PAYMENTS:
        admin = f"127.0.0.1:{ports(mesh_run, pod).admin}"
        assert (await faulted_routes(admin))["ingress"] == [], pod
        ingress = f"http://127.0.0.1:{ports(mesh_run, pod).ingress}/merchant-write"
        assert (await send(ingress, method="POST"))[0].status == 200


async def test_plan_resolves_targets_and_changes_nothing(
    mesh_run: MeshRun, stub, control: ControlServer
) -> None:
    versions_before = _generations(control)

    plan = await stub.PlanInjection(injection_request())

    assert sorted(plan.matched) == SOUTH
    assert len(plan.targets) == 3
    assert {p.sidecar for p in plan.sidecars} == set(plan.targets)
    for sidecar in plan.sidecars:
        assert sidecar.route_config == "egress"
        assert "faultplane.fault.1" in sidecar.route_config_json
        assert sorted(sidecar.runtime.values()) == [4.0, 100.0]
    assert _generations(control) == versions_before
    listed = await stub.ListInjections(pb.ListInjectionsRequest(states=[pb.PENDING, pb.ACTIVE]))
    assert list(listed.injections) == []


@pytest.mark.parametrize(
    ("request_kwargs", "field"),
    [
        ({"target": {"service": "nope"}}, "target.service"),
        ({"target": {"selector": "shard in (south-1"}}, "target.selector"),
        ({"target": {"upstream": "payments-api"}}, "target.upstream"),
        ({"fault": {"type": "latency", "p50_ms": 300, "p99_ms": 100}}, "fault.p99_ms"),
        ({"fault": {"type": "abort", "http_status": 700}}, "fault.http_status"),
        ({"duration_seconds": 0}, "duration_seconds"),
        ({"owner": ""}, "owner"),
    ],
)
async def test_bad_input_is_invalid_argument_naming_the_field_and_changes_nothing(
    stub, control: ControlServer, request_kwargs: dict, field: str
) -> None:
    versions_before = _generations(control)
    listed_before = await stub.ListInjections(pb.ListInjectionsRequest())

    error = await rpc_error(stub.CreateInjection(injection_request(**request_kwargs)))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(f"{field}: ") or f"; {field}: " in error.details()
    assert _generations(control) == versions_before
    listed_after = await stub.ListInjections(pb.ListInjectionsRequest())
    assert len(listed_after.injections) == len(listed_before.injections)


async def test_refusals_name_the_reason(stub) -> None:
    nothing = await rpc_error(
        stub.CreateInjection(injection_request(target={"selector": "shard=mars-9"}))
    )
    assert nothing.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "matches no connected sidecar" in nothing.details()

    live = await inject(stub, injection_request())
    overlap = await rpc_error(stub.CreateInjection(injection_request()))
    assert overlap.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert live.id in overlap.details()

    missing = await rpc_error(stub.GetInjection(pb.GetInjectionRequest(id="inj-nope")))
    assert missing.code() == grpc.StatusCode.NOT_FOUND

    await stub.AbortInjection(pb.AbortInjectionRequest(id=live.id))
    again = await rpc_error(stub.AbortInjection(pb.AbortInjectionRequest(id=live.id)))
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "already ABORTED" in again.details()


async def test_watch_streams_every_state_change(stub) -> None:
    events = stub.WatchInjections(pb.WatchInjectionsRequest())
    await events.initial_metadata()  # the server has subscribed us
    seen: list[tuple[str, int]] = []
    created = await stub.CreateInjection(
        injection_request(
            target={**ALL_PAYMENTS, "upstream": None},
            fault={"type": "abort", "http_status": 503},
            duration_seconds=1,
        )
    )
    async for event in events:
        if event.injection.id == created.id:
            seen.append((event.injection.id, event.transition.to_state))
        if event.transition.to_state in (pb.COMPLETED, pb.ABORTED, pb.FAILED):
            break
    events.cancel()

    assert [state for _, state in seen] == [pb.PENDING, pb.ACTIVE, pb.COMPLETED]


async def test_list_filters_by_state_and_service_and_pages(stub) -> None:
    first = await inject(
        stub,
        injection_request(
            target={**ALL_PAYMENTS, "upstream": None}, fault={"type": "abort", "http_status": 503}
        ),
    )
    await inject(
        stub,
        injection_request(
            target={"service": "ledger", "selector": "", "max_pods": 1, "upstream": None},
            fault={"type": "abort", "http_status": 500},
        ),
    )

    active_payments = await stub.ListInjections(
        pb.ListInjectionsRequest(states=[pb.ACTIVE], service="payments-api")
    )
    assert [i.id for i in active_payments.injections] == [first.id]

    page = await stub.ListInjections(pb.ListInjectionsRequest(page_size=1))
    seen = [page.injections[0].id]
    while page.next_page_token:
        page = await stub.ListInjections(
            pb.ListInjectionsRequest(page_size=1, page_token=page.next_page_token)
        )
        seen += [i.id for i in page.injections]
    everything = await stub.ListInjections(pb.ListInjectionsRequest(page_size=500))
    assert seen == [i.id for i in everything.injections]
    bad = await rpc_error(stub.ListInjections(pb.ListInjectionsRequest(page_token="x")))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT


def _generations(control: ControlServer) -> dict[str, dict[str, int]]:
    return {
        pod.name: {t: s.generation for t, s in (control.cache.get(pod.name) or {}).items()}
        for pod in control.config.mesh.pods
    }
