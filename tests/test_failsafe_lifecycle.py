"""The lifecycle fails safe in faultplane's own failures: a failing store, a late ACK, a
stop racing admission, a crash inside the lifecycle, slots taken by a pending injection,
a mesh edited across a restart.

An in-process control server with fake sidecars (real ADS clients over loopback that ACK
like Envoy); what a sidecar would run is read from the server's desired state, which is
what every real-Envoy test shows reaching the data plane.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
import yaml
from envoy.config.route.v3 import route_pb2
from envoy.service.runtime.v3 import rtds_pb2

from faultplane.api.validate import validate_request
from faultplane.demo.ports import PortAllocator
from faultplane.lifecycle.approval import ApprovalPolicy
from faultplane.lifecycle.lifecycle import LEASE_GRACE_SECONDS, Lifecycle
from faultplane.model.injection import State
from faultplane.model.mesh import Mesh, load_mesh, parse_mesh
from faultplane.server.control import ControlServer
from faultplane.store import StoreError
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from faultplane.xds import types
from tests.conftest import MESH_FILE, server_config
from tests.fake_sidecar import start_with_sidecars
from tests.helpers import injection_request, rpc_error, until, wait_state

PAYMENTS = ["payments-api-1", "payments-api-2", "payments-api-3", "payments-api-4"]
INBOUND = {"selector": "", "max_pods": 4, "upstream": None}
ABORT = {"type": "abort", "http_status": 503}


class Harness:
    """A control server, fake sidecars for every pod, and an API stub."""

    def __init__(self, server: ControlServer, stub: faultplane_pb2_grpc.FaultServiceStub) -> None:
        self.server = server
        self.stub = stub

    def switched_on(self, node: str) -> list[str]:
        """The runtime keys the node's desired RTDS layer sets (the faults switched on)."""
        snapshot = self.server.cache.get(node) or {}
        runtime = snapshot.get(types.RUNTIME)
        keys: list[str] = []
        for resource in runtime.resources.values() if runtime else ():
            layer = rtds_pb2.Runtime()
            resource.Unpack(layer)
            keys += [k for k in layer.layer.fields if k.startswith("faultplane.")]
        return sorted(keys)

    def armed_routes(self, node: str) -> int:
        """How many of the node's desired routes carry a fault slot config."""
        snapshot = self.server.cache.get(node) or {}
        routes = snapshot.get(types.ROUTE)
        count = 0
        for resource in routes.resources.values() if routes else ():
            config = route_pb2.RouteConfiguration()
            resource.Unpack(config)
            count += sum(
                1
                for vhost in config.virtual_hosts
                for route in vhost.routes
                if route.typed_per_filter_config
            )
        return count

    def carries_nothing(self) -> bool:
        return all(not self.switched_on(n) and not self.armed_routes(n) for n in PAYMENTS)

    def lease_left(self, node: str) -> float:
        """Seconds the node's desired RTDS layer may live (its lease cap)."""
        runtime = (self.server.cache.get(node) or {})[types.RUNTIME]
        assert runtime.lease_until is not None
        return runtime.lease_until - time.monotonic()

    def spec(self, **overrides: Any):
        request = injection_request(**{"target": INBOUND, "fault": ABORT, **overrides})
        return validate_request(request, self.server.config.mesh, None)


Start = Callable[..., Any]


@pytest_asyncio.fixture
async def start(mesh: Mesh, tmp_path: Path) -> AsyncIterator[Start]:
    async with AsyncExitStack() as stack:

        async def start_harness(
            mesh_model: Mesh = mesh, ack_delay: dict[str, float] | None = None, **config: Any
        ) -> Harness:
            config.setdefault("db_path", tmp_path / "faultplane.db")
            server, channel = await start_with_sidecars(
                stack, server_config(mesh_model, **config), list(mesh_model.pods), ack_delay
            )
            return Harness(server, faultplane_pb2_grpc.FaultServiceStub(channel))

        yield start_harness


def fail_writes(server: ControlServer, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise StoreError("disk I/O error (injected by the test)")

    store = server.store
    writes = (
        (store.injections, "record_transition"),
        (store.injections, "save"),
        (store.readings, "add"),
        (store.audit, "append"),
    )
    for repository, name in writes:
        monkeypatch.setattr(repository, name, broken)


def stored_states(server: ControlServer, injection_id: str) -> list[str]:
    [stored] = [i for i in server.store.injections.load() if i.id == injection_id]
    return [t.body["to"] for t in stored.transitions]


async def test_abort_withdraws_at_once_while_the_store_fails_and_records_it_later(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await start()
    created = await h.stub.CreateInjection(injection_request(target=INBOUND, fault=ABORT))
    await wait_state(h.stub, created.id, {pb.ACTIVE})
    assert all(h.switched_on(n) for n in PAYMENTS)

    with monkeypatch.context() as broken_store:
        fail_writes(h.server, broken_store)
        scheduler = h.server.scheduler
        aborted = await asyncio.wait_for(scheduler.abort(created.id, "stop", "test"), 5)
        assert aborted.state is State.ABORTED
        assert h.carries_nothing()
        assert "ABORTED" not in stored_states(h.server, created.id)
    # The store is back: the retried record lands.
    await until(lambda: "ABORTED" in stored_states(h.server, created.id))


async def test_deadline_withdraws_while_the_store_fails(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await start()
    created = await h.stub.CreateInjection(
        injection_request(target=INBOUND, fault=ABORT, duration_seconds=1.0)
    )
    active = await wait_state(h.stub, created.id, {pb.ACTIVE})
    fail_writes(h.server, monkeypatch)
    ends_at = active.ends_at.ToNanoseconds() / 1e9

    await until(h.carries_nothing, timeout=5)

    assert time.time() >= ends_at  # withdrawn by the deadline, not before
    # The state follows once every target answered the withdrawal.
    await until(lambda: h.server.scheduler.get(created.id).state is State.COMPLETED)


async def test_a_lifecycle_that_crashes_withdraws_and_ends_failed(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await start()
    created = await h.stub.CreateInjection(injection_request(target=INBOUND, fault=ABORT))
    await wait_state(h.stub, created.id, {pb.ACTIVE})

    def crash(self: Lifecycle, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("bug inside the lifecycle (injected by the test)")

    monkeypatch.setattr(Lifecycle, "_withdraw", crash)
    h.server.scheduler.refute(created.id, "steady-state breach (test)", time.time())

    await until(lambda: h.server.scheduler.get(created.id).state is State.ABORTED)
    assert h.carries_nothing()


async def test_an_exception_during_activation_fails_the_injection_and_leaves_nothing(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await start()
    delivery = h.server.scheduler._delivery
    original = delivery.push_many

    async def push_many(changes, type_url, wait_gone=True):
        evidence = await original(changes, type_url, wait_gone)
        if type_url == types.RUNTIME and any(f is not None and f.enabled for *_, f in changes):
            raise RuntimeError("bug after switching on (injected by the test)")
        return evidence

    monkeypatch.setattr(delivery, "push_many", push_many)
    created = await h.stub.CreateInjection(injection_request(target=INBOUND, fault=ABORT))

    done = await wait_state(h.stub, created.id, {pb.FAILED, pb.ABORTED, pb.COMPLETED})
    assert done.state == pb.FAILED and "internal error" in done.reason
    assert h.carries_nothing()


async def test_the_lease_covers_the_whole_run_when_acks_come_late(start: Start) -> None:
    # Every RTDS ACK takes a second: far beyond the lease's grace.
    h = await start(ack_delay={types.RUNTIME: 1.0})
    created = await h.stub.CreateInjection(
        injection_request(target=INBOUND, fault=ABORT, duration_seconds=30)
    )
    active = await wait_state(h.stub, created.id, {pb.ACTIVE})
    left_to_deadline = active.ends_at.ToNanoseconds() / 1e9 - time.time()

    for node in PAYMENTS:
        # Never short of the deadline; never beyond it by more than the grace.
        assert left_to_deadline <= h.lease_left(node) <= left_to_deadline + LEASE_GRACE_SECONDS


async def test_abort_all_stops_every_injection_whose_creation_is_in_flight(
    start: Start,
) -> None:
    h = await start()
    scheduler = h.server.scheduler
    specs = [
        h.spec(target={**INBOUND, "match": {"path_prefix": f"/p{i}"}}, owner=f"o{i}")
        for i in range(20)
    ]
    creating = [asyncio.create_task(scheduler.create(spec, {}, "test")) for spec in specs]
    await asyncio.sleep(0)  # one loop turn: every create is admitted, none on disk yet
    assert len(scheduler.list()) == 20

    await scheduler.abort_all("big red button", "test")
    created = await asyncio.gather(*creating)

    await until(lambda: all(not inj.state.live for inj in created))
    assert {inj.state for inj in created} == {State.ABORTED}
    assert h.carries_nothing()


async def test_slots_are_reserved_at_admission(start: Start) -> None:
    h = await start(fault_slots=1, approval=ApprovalPolicy(max_pods=1))
    # Waits for approval: nothing pushed yet, but its slot on the inbound routes is taken.
    waiting = await h.stub.CreateInjection(injection_request(target=INBOUND, fault=ABORT))
    assert waiting.state == pb.PENDING_APPROVAL

    narrower = {**INBOUND, "max_pods": 1, "match": {"path_prefix": "/merchant-write"}}
    refused = await rpc_error(
        h.stub.CreateInjection(injection_request(target=narrower, fault=ABORT))
    )

    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no free fault slot" in refused.details()


def _mesh_without_dependency(service: str, dependency: str) -> Mesh:
    document = yaml.safe_load(MESH_FILE.read_text())
    edited = copy.deepcopy(document)
    deps = edited["services"][service]["dependencies"]
    deps.remove(dependency)
    return parse_mesh(edited).with_ports(PortAllocator())


async def test_restart_after_the_mesh_changed_keeps_records_and_ends_what_no_longer_fits(
    start: Start, tmp_path: Path
) -> None:
    mesh = load_mesh(MESH_FILE).with_ports(PortAllocator())
    first = await start(mesh, deadman_ttl=2.0)
    to_fraud = {**INBOUND, "upstream": "fraud-scoring"}
    to_ledger = {**INBOUND, "upstream": "ledger"}
    finished = await first.stub.CreateInjection(
        injection_request(target=to_fraud, fault=ABORT, duration_seconds=0.5)
    )
    await wait_state(first.stub, finished.id, {pb.COMPLETED})
    gone = await first.stub.CreateInjection(injection_request(target=to_fraud, fault=ABORT))
    kept = await first.stub.CreateInjection(injection_request(target=to_ledger, fault=ABORT))
    for injection in (gone, kept):
        await wait_state(first.stub, injection.id, {pb.ACTIVE})
    await first.server.stop(grace=0)

    # payments-api no longer calls fraud-scoring.
    second = await start(_mesh_without_dependency("payments-api", "fraud-scoring"))

    record = await second.stub.GetInjection(pb.GetInjectionRequest(id=finished.id))
    ended = await second.stub.GetInjection(pb.GetInjectionRequest(id=gone.id))
    resumed = await second.stub.GetInjection(pb.GetInjectionRequest(id=kept.id))
    assert record.state == pb.COMPLETED
    assert ended.state == pb.FAILED and "no longer fits the mesh" in ended.reason
    assert "fraud-scoring" in ended.reason
    assert resumed.state == pb.ACTIVE
    await until(lambda: all(second.switched_on(n) for n in PAYMENTS))
