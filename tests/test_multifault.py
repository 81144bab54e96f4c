"""One experiment, several faults, on the real demo mesh under load.

One mesh (7 Envoys, apps, load generator) and one in-process control server serve the
module; every test withdraws what it injected (the `clean` fixture aborts all and checks
that no sidecar still carries a fault key or an armed route).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import json_format

from faultplane.demo.launcher import MeshRun
from faultplane.demo.ports import PortAllocator
from faultplane.demo.processes import wait_until
from faultplane.model.mesh import load_mesh
from faultplane.server.control import ControlServer
from faultplane.slo.catalogue import parse_catalogue
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests.conftest import MESH_FILE, server_config
from tests.helpers import (
    EXAMPLE,
    ROOT,
    fault_runtime_keys,
    faulted_routes,
    run_cli,
    send,
    wait_state,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

EXAMPLE_FILE = ROOT / "examples" / "correlated-fraud-ledger.json"
PAYMENTS = ["payments-api-1", "payments-api-2", "payments-api-3", "payments-api-4"]
SOUTH = PAYMENTS[:3]
CATALOGUE = {
    "slos": {
        "merchant-write-success": {"service": "payments-api", "window_seconds": 60},
        "payments-ok": {"service": "payments-api", "window_seconds": 2},
    }
}
NEVER_BREACHED = {"slo": "merchant-write-success", "min": 0.0, "abort_after": 600}
DELAY_MS = 150
# fraud-scoring calls of every payments-api pod +150 ms AND ledger calls of the south
# shard refused with 503: two correlated dependency failures, one experiment.
SLOW_FRAUD = {
    "target": {"service": "payments-api", "selector": "", "max_pods": 4,
               "upstream": "fraud-scoring"},
    "fault": {"type": "latency", "fixed_ms": DELAY_MS},
}  # fmt: skip
LEDGER_DOWN = {
    "target": {"service": "payments-api", "selector": "shard=south-1", "max_pods": 3,
               "upstream": "ledger"},
    "fault": {"type": "abort", "http_status": 503},
}  # fmt: skip


def experiment(*parts: dict[str, Any], steady_state: dict[str, Any]) -> pb.InjectionRequest:
    """The example document with `faults` in place of its target and fault."""
    document = {k: v for k, v in EXAMPLE.items() if k not in ("target", "fault")}
    document.update(faults=list(parts), steady_state=steady_state)
    return json_format.ParseDict(document, pb.InjectionRequest())


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mesh_run(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MeshRun]:
    mesh = load_mesh(MESH_FILE).with_ports(PortAllocator())
    config = server_config(
        mesh, deadman_ttl=5.0, ack_timeout=5.0, guard_tick=0.5,
        slos=parse_catalogue(CATALOGUE, mesh.services),
    )  # fmt: skip
    server = ControlServer(config)
    await server.start()
    try:
        async with MeshRun(MESH_FILE, tmp_path_factory.mktemp("mesh"), mesh=mesh,
                           spawn_server=False) as run:  # fmt: skip
            yield run
    finally:
        await server.stop(grace=0)


@pytest_asyncio.fixture(loop_scope="module")
async def stub(mesh_run: MeshRun) -> AsyncIterator[faultplane_pb2_grpc.FaultServiceStub]:
    async with grpc.aio.insecure_channel(mesh_run.api_address) as channel:
        yield faultplane_pb2_grpc.FaultServiceStub(channel)


@pytest_asyncio.fixture(loop_scope="module", autouse=True)
async def clean(
    mesh_run: MeshRun, stub: faultplane_pb2_grpc.FaultServiceStub
) -> AsyncIterator[None]:
    yield
    await stub.AbortAllInjections(pb.AbortAllInjectionsRequest(reason="test cleanup"))
    await assert_nothing_carried(mesh_run)


async def assert_nothing_carried(run: MeshRun) -> None:
    """No sidecar of the mesh has a fault key in its runtime or a fault slot on a route
    (the withdrawal waits for the disconnected only, and every sidecar here is up)."""
    for pod in run.mesh.pods:
        admin = f"127.0.0.1:{pod.ports.admin}"
        assert await fault_runtime_keys(admin) == [], pod.name
        assert all(not slots for slots in (await faulted_routes(admin)).values()), pod.name


def egress(run: MeshRun, pod: str) -> str:
    found = run.mesh.pod(pod)
    assert found is not None
    return f"http://127.0.0.1:{found.ports.egress}/score"


async def test_two_part_experiment_is_active_once_every_part_acked_and_aborts_whole(
    mesh_run: MeshRun, stub: faultplane_pb2_grpc.FaultServiceStub
) -> None:
    created = await stub.CreateInjection(
        experiment(SLOW_FRAUD, LEDGER_DOWN, steady_state=NEVER_BREACHED), timeout=10
    )
    assert created.state == pb.PENDING
    assert sorted(created.targets) == PAYMENTS  # the union of both parts' targets
    active = await wait_state(stub, created.id, {pb.ACTIVE, pb.FAILED})
    assert active.state == pb.ACTIVE, active.reason

    # ACTIVE carries an ACK of the armed routes and of the switched-on keys from every
    # target of every part: the south pods answered once for both of their faults.
    became_active = next(t for t in active.transitions if t.to_state == pb.ACTIVE)
    acked = {(e.sidecar, e.type) for e in became_active.evidence if e.outcome == "acked"}
    assert acked == {(pod, kind) for pod in PAYMENTS for kind in ("rds", "rtds")}
    keys = await fault_runtime_keys(f"127.0.0.1:{mesh_run.mesh.pod('payments-api-1').ports.admin}")  # type: ignore[union-attr]
    assert any(k.startswith(f"faultplane.{created.id}.1.0.") for k in keys), keys  # part 1
    assert any(k.startswith(f"faultplane.{created.id}.0.") for k in keys), keys  # part 0

    # Both faults in traffic: slow fraud-scoring everywhere, ledger down in the south only.
    south, north = egress(mesh_run, "payments-api-1"), egress(mesh_run, "payments-api-4")
    slow, refused, north_ledger = await asyncio.gather(
        send(south, 10, host="fraud-scoring"), send(south, 10, host="ledger"),
        send(north, 10, host="ledger"),
    )  # fmt: skip
    assert all(r.status == 200 and r.ms >= DELAY_MS for r in slow)
    assert [r.status for r in refused] == [503] * 10
    assert [r.status for r in north_ledger] == [200] * 10

    aborted = await stub.AbortInjection(pb.AbortInjectionRequest(id=created.id, reason="done"))
    ended = await wait_state(stub, aborted.id, {pb.ABORTED})
    assert ended.verdict == "inconclusive: aborted by an operator"
    await assert_nothing_carried(mesh_run)  # both parts withdrawn by the one abort
    assert [r.status for r in await send(south, 10, host="ledger")] == [200] * 10


async def test_guard_abort_on_one_part_breach_withdraws_every_part(
    mesh_run: MeshRun, stub: faultplane_pb2_grpc.FaultServiceStub
) -> None:
    # The south shard refuses its inbound merchant writes (the part that breaches the
    # SLO); the north pod's fraud-scoring calls get 1 ms (a part that alone would not).
    breaching = {
        "target": {"service": "payments-api", "selector": "shard=south-1", "max_pods": 3},
        "fault": {"type": "abort", "http_status": 503},
    }
    harmless = {
        "target": {"service": "payments-api", "selector": "shard=north-1", "max_pods": 1,
                   "upstream": "fraud-scoring"},
        "fault": {"type": "latency", "fixed_ms": 1},
    }  # fmt: skip
    steady = {"slo": "payments-ok", "min": 0.9, "abort_after": 1}
    created = await stub.CreateInjection(experiment(breaching, harmless, steady_state=steady))
    ended = await wait_state(stub, created.id, {pb.ABORTED, pb.FAILED, pb.COMPLETED}, 30)

    assert ended.state == pb.ABORTED, ended.reason
    assert ended.verdict == "hypothesis refuted"
    assert pb.ACTIVE in [t.to_state for t in ended.transitions]  # it ran, then the guard
    assert "payments-ok" in ended.reason
    # The guard's end took the harmless part off payments-api-4 too.
    await assert_nothing_carried(mesh_run)


async def test_one_unanswering_part_fails_the_experiment_and_withdraws_every_part(
    mesh_run: MeshRun, stub: faultplane_pb2_grpc.FaultServiceStub
) -> None:
    ledger_inbound = {
        "target": {"service": "ledger", "selector": "", "max_pods": 1},
        "fault": {"type": "abort", "http_status": 503},
    }
    envoy = next(p for p in mesh_run.pods if p.pod.name == "ledger-1").envoy
    os.kill(envoy.process.pid, signal.SIGSTOP)  # connected, answering nothing
    try:
        created = await stub.CreateInjection(
            experiment(SLOW_FRAUD, ledger_inbound, steady_state=NEVER_BREACHED), timeout=10
        )
        ended = await wait_state(stub, created.id, {pb.FAILED, pb.ACTIVE, pb.ABORTED}, 30)
        assert ended.state == pb.FAILED
        assert "sidecar ledger-1 timeout" in ended.reason
        assert pb.ACTIVE not in [t.to_state for t in ended.transitions]
        # The part whose sidecars all answered is gone too, while ledger-1 still sleeps.
        for pod in PAYMENTS:
            admin = f"127.0.0.1:{mesh_run.mesh.pod(pod).ports.admin}"  # type: ignore[union-attr]
            assert await fault_runtime_keys(admin) == [], pod
            assert all(not slots for slots in (await faulted_routes(admin)).values()), pod
    finally:
        os.kill(envoy.process.pid, signal.SIGCONT)
    ledger_admin = f"127.0.0.1:{mesh_run.mesh.pod('ledger-1').ports.admin}"  # type: ignore[union-attr]

    async def ledger_clean() -> bool:
        routes = await faulted_routes(ledger_admin)
        return not await fault_runtime_keys(ledger_admin) and not any(routes.values())

    await wait_until(ledger_clean, 20, "ledger-1 to apply the withdrawal once awake")


async def test_plan_shows_the_sidecars_of_every_part(
    stub: faultplane_pb2_grpc.FaultServiceStub,
) -> None:
    fraud_down = {
        "target": {"service": "fraud-scoring", "selector": "", "max_pods": 2},
        "fault": {"type": "abort", "http_status": 503},
    }
    plan = await stub.PlanInjection(
        experiment(SLOW_FRAUD, fraud_down, steady_state=NEVER_BREACHED), timeout=10
    )
    every = [*PAYMENTS, "fraud-scoring-1", "fraud-scoring-2"]
    assert sorted(plan.targets) == sorted(plan.matched) == sorted(every)
    shown = {s.sidecar: s for s in plan.sidecars}
    assert sorted(shown) == sorted(every)
    # Each sidecar's change switches its own part's fault on (delay here, abort there).
    assert all(any("delay" in k for k in shown[p].runtime) for p in PAYMENTS)
    assert all(any("abort" in k for k in shown[p].runtime) for p in every[4:])


async def test_the_example_experiment_plans_injects_and_shows_both_parts_from_the_cli(
    mesh_run: MeshRun, tmp_path: Path
) -> None:
    # The example's faults as written; its steady state relaxed, since earlier tests here
    # breached merchant writes on purpose and the pre-flight would refuse its min.
    example = json.loads(EXAMPLE_FILE.read_text())
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps({**example, "steady_state": NEVER_BREACHED}))
    api = ("--api", mesh_run.api_address)
    code, plan, err = await run_cli("plan", "-f", str(path), *api)
    assert code == 0, err
    assert "targets: payments-api-1, payments-api-2, payments-api-3" in plan

    code, out, err = await run_cli("inject", "-f", str(path), "--json", *api)
    assert code == 0, err
    injection = json.loads(out)
    code, shown, err = await run_cli("get", injection["id"], *api)
    assert code == 0, err
    assert "latency 200ms -> fraud-scoring + abort http 503 on 10% -> ledger" in shown
    assert shown.count("target      payments-api [shard=south-1] max 3") == 2


async def test_overlapping_parts_are_refused_naming_the_part(
    stub: faultplane_pb2_grpc.FaultServiceStub,
) -> None:
    twice = {**LEDGER_DOWN, "fault": {"type": "latency", "fixed_ms": 5}}
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateInjection(experiment(LEDGER_DOWN, twice, steady_state=NEVER_BREACHED))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "faults[1].target: sidecar payments-api-1 is also chosen by faults[0]" in (
        refused.value.details() or ""
    )
