"""The injection metrics on a real server's /metrics, against a real Envoy mesh.

One mesh (7 Envoys, apps, load) serves the module; each test starts its own control
server on the mesh's ports and store (the sidecars reconnect). Values are read by
scraping /metrics over HTTP, as Prometheus would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
import pytest_asyncio
import yaml
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from faultplane.demo.launcher import MeshRun
from faultplane.demo.ports import PortAllocator
from faultplane.demo.processes import wait_until
from faultplane.lifecycle.approval import ApprovalPolicy
from faultplane.model.injection import State
from faultplane.model.mesh import load_mesh
from faultplane.server.control import ControlServer, ServerConfig
from faultplane.slo.catalogue import load_catalogue
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests.conftest import MESH_FILE
from tests.helpers import ROOT, injection_request, wait_state

pytestmark = pytest.mark.asyncio(loop_scope="module")

ALL_PAYMENTS_INBOUND = {"selector": "", "max_pods": 4, "upstream": None}
ALL_FRAUD_INBOUND = {"service": "fraud-scoring", "selector": "", "max_pods": 2, "upstream": None}
HARMLESS = {"type": "latency", "fixed_ms": 1}
# Longer than this needs a second person: how a test puts one in the approval queue.
APPROVAL_ABOVE_SECONDS = 500.0
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
Start = Callable[..., Awaitable[ControlServer]]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mesh_run(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MeshRun]:
    """The demo mesh under load; a bootstrap server configures it, then each test brings
    its own server on the same ports."""
    mesh = load_mesh(MESH_FILE).with_ports(PortAllocator())
    mesh = dataclasses.replace(mesh, load=dataclasses.replace(mesh.load, rate_per_second=40))
    bootstrap = ControlServer(
        ServerConfig(mesh, mesh.control.xds_port, mesh.control.api_port, metrics_port=None)
    )
    await bootstrap.start()
    run_dir = tmp_path_factory.mktemp("mesh")
    async with MeshRun(MESH_FILE, run_dir, mesh=mesh, spawn_server=False) as run:
        await bootstrap.stop(grace=0)
        yield run


@pytest_asyncio.fixture(loop_scope="module")
async def start(mesh_run: MeshRun, tmp_path: Path) -> AsyncIterator[Start]:
    """Starts a server on the mesh's ports and this test's store; every one started is
    stopped (its faults withdrawn) at the end, even when the test fails."""
    servers: list[ControlServer] = []

    async def start_server(**overrides: Any) -> ControlServer:
        mesh = mesh_run.mesh
        assert mesh is not None
        config = ServerConfig(
            mesh=mesh,
            xds_port=mesh.control.xds_port,
            api_port=mesh.control.api_port,
            metrics_port=0,
            deadman_ttl=5.0,
            slos=load_catalogue(ROOT / "envoy-configs" / "slos.yaml", mesh.services),
            guard_tick=0.5,
            baseline_min_seconds=0,
            db_path=tmp_path / "faultplane.db",
            approval=ApprovalPolicy(max_duration_seconds=APPROVAL_ABOVE_SECONDS),
            **overrides,
        )
        server = ControlServer(config)
        servers.append(server)
        await server.start()
        await wait_until(lambda: _all_acked(server, len(mesh.pods)), 30, "sidecars to ACK")
        return server

    yield start_server
    for server in servers:
        try:
            if not server._stopped:
                await server.scheduler.abort_all("test cleanup", "test")
        finally:
            await server.stop(grace=0)


async def _all_acked(server: ControlServer, count: int) -> bool:
    sidecars = server.registry.sidecars()
    return sum(s.connected for s in sidecars) == count and all(
        s.status(t).acked_version for s in sidecars for t in s.types
    )


@pytest_asyncio.fixture(loop_scope="module")
async def stub(mesh_run: MeshRun) -> AsyncIterator[faultplane_pb2_grpc.FaultServiceStub]:
    async with grpc.aio.insecure_channel(mesh_run.api_address) as channel:
        yield faultplane_pb2_grpc.FaultServiceStub(channel)


async def metrics_text(server: ControlServer) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{server.metrics_port}/metrics") as response,
    ):
        assert response.status == 200
        return await response.text()


async def scrape(server: ControlServer) -> Samples:
    """Every sample on /metrics: (name, labels) -> value."""
    samples: Samples = {}
    for family in text_string_to_metric_families(await metrics_text(server)):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def until_metric(
    server: ControlServer, name: str, expected: float | None, timeout: float = 15, **labels: str
) -> Samples:
    """Scrape until `name{labels}` is `expected` (None: absent); the last scrape."""
    last: list[Samples] = [{}]

    async def reached() -> bool:
        last[0] = await scrape(server)
        return value(last[0], name, **labels) == expected

    await wait_until(reached, timeout, f"{name}{labels} == {expected}")
    return last[0]


async def until_present(server: ControlServer, name: str, **labels: str) -> Samples:
    last: list[Samples] = [{}]

    async def present() -> bool:
        last[0] = await scrape(server)
        return value(last[0], name, **labels) is not None

    await wait_until(present, 15, f"{name}{labels} on /metrics")
    return last[0]


def guarded(minimum: float, abort_after: float) -> dict[str, Any]:
    slo = "merchant-write-success"
    return {"steady_state": {"slo": slo, "min": minimum, "abort_after": abort_after}}


async def test_live_injection_is_in_every_metric_and_leaves_them_when_aborted(
    start: Start, stub: faultplane_pb2_grpc.FaultServiceStub
) -> None:
    # The gauge is the process's: other tests' registries in this worker count in it.
    elsewhere = REGISTRY.get_sample_value("faultplane_sidecars_connected") or 0.0
    server = await start()
    before = await scrape(server)
    assert {value(before, "faultplane_injections", state=s.value) for s in State} == {0.0}
    assert value(before, "faultplane_frozen") == 0
    assert value(before, "faultplane_queue_depth") == 0
    assert value(before, "faultplane_injection_transitions_total",
                 to="ABORTED", reason_kind="guard") == 0  # fmt: skip

    created = await stub.CreateInjection(
        injection_request(target=ALL_PAYMENTS_INBOUND, fault=HARMLESS, duration_seconds=120,
                          **guarded(0.0, 600))
    )  # fmt: skip
    await wait_state(stub, created.id, {pb.ACTIVE})
    live = await until_present(
        server, "faultplane_guard_reading", injection=created.id, slo="merchant-write-success"
    )
    assert value(live, "faultplane_injections", state="ACTIVE") == 1
    assert value(live, "faultplane_active_faults", service="payments-api", type="latency") == 1
    assert value(live, "faultplane_injection_transitions_total",
                 to="ACTIVE", reason_kind="activated") == 1  # fmt: skip
    reading = value(live, "faultplane_guard_reading", injection=created.id,
                    slo="merchant-write-success")  # fmt: skip
    assert reading is not None and 0.0 <= reading <= 1.0
    assert live[("faultplane_sidecars_connected", frozenset())] == elsewhere + 7  # xDS ones

    await stub.Freeze(pb.FreezeRequest(reason="incident INC-7"))
    assert value(await scrape(server), "faultplane_frozen") == 1
    await stub.Unfreeze(pb.UnfreezeRequest())
    assert value(await scrape(server), "faultplane_frozen") == 0

    await stub.AbortInjection(pb.AbortInjectionRequest(id=created.id, reason="paged"))
    after = await until_metric(server, "faultplane_injections", 1, state="ABORTED")
    assert value(after, "faultplane_injections", state="ACTIVE") == 0
    assert value(after, "faultplane_injection_transitions_total",
                 to="ABORTED", reason_kind="operator") == 1  # fmt: skip
    assert value(after, "faultplane_active_faults", service="payments-api", type="latency") is None
    gone = [key for key in after if key[0] == "faultplane_guard_reading"]
    assert gone == [], "the guard reading of an ended injection must be removed"


async def test_guard_abort_counts_as_reason_guard_and_approval_as_queue(
    start: Start, stub: faultplane_pb2_grpc.FaultServiceStub
) -> None:
    server = await start()
    waiting = await stub.CreateInjection(
        injection_request(target=ALL_FRAUD_INBOUND, fault=HARMLESS,
                          duration_seconds=APPROVAL_ABOVE_SECONDS + 100)
    )  # fmt: skip
    assert waiting.state == pb.PENDING_APPROVAL
    queued = await until_metric(server, "faultplane_queue_depth", 1)
    assert value(queued, "faultplane_injections", state="PENDING_APPROVAL") == 1

    breaching = await stub.CreateInjection(
        injection_request(target=ALL_PAYMENTS_INBOUND,
                          fault={"type": "abort", "http_status": 503, "percentage": 100},
                          duration_seconds=60, **guarded(0.99, 1))
    )  # fmt: skip
    done = await wait_state(stub, breaching.id, {pb.ABORTED, pb.COMPLETED, pb.FAILED}, 30)
    assert done.verdict == "hypothesis refuted"
    ended = await until_metric(server, "faultplane_injection_transitions_total", 1,
                               to="ABORTED", reason_kind="guard")  # fmt: skip
    assert value(ended, "faultplane_active_faults", service="payments-api", type="abort") is None

    await stub.AbortInjection(pb.AbortInjectionRequest(id=waiting.id, reason="not today"))
    drained = await until_metric(server, "faultplane_queue_depth", 0)
    assert value(drained, "faultplane_injections", state="ABORTED") == 2


async def test_restarted_server_reports_what_its_predecessor_left(
    start: Start, stub: faultplane_pb2_grpc.FaultServiceStub
) -> None:
    first = await start()
    finished = await stub.CreateInjection(
        injection_request(target=ALL_PAYMENTS_INBOUND, fault=HARMLESS, duration_seconds=1)
    )
    await wait_state(stub, finished.id, {pb.COMPLETED})
    resumed = await stub.CreateInjection(
        injection_request(target=ALL_PAYMENTS_INBOUND, fault=HARMLESS, duration_seconds=120)
    )
    await wait_state(stub, resumed.id, {pb.ACTIVE})
    await first.stop(grace=0)  # leaves the fault to its lease, for the next to resume

    second = await start()
    # No new transition is needed for the numbers: they come from the store at start.
    restarted = await scrape(second)
    assert value(restarted, "faultplane_injections", state="COMPLETED") == 1
    assert value(restarted, "faultplane_injections", state="ACTIVE") == 1
    assert value(restarted, "faultplane_active_faults", service="payments-api",
                 type="latency") == 1  # fmt: skip
    assert value(restarted, "faultplane_injection_transitions_total",
                 to="ACTIVE", reason_kind="resumed") == 1  # fmt: skip


EXAMPLES = ROOT / "examples" / "observability"
METRIC_NAME = re.compile(r"\bfaultplane_[a-z_]+\b")


def named_metrics() -> set[str]:
    """Every faultplane_* name an example alert rule or dashboard query uses."""
    rules = yaml.safe_load((EXAMPLES / "alerts.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((EXAMPLES / "grafana-dashboard.json").read_text())
    exprs += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"]]
    return {name for expr in exprs for name in METRIC_NAME.findall(expr)}


def exposed_names(text: str) -> set[str]:
    """Names on /metrics: samples, HELP/TYPE lines (a labelled counter nobody has
    incremented yet has only those), and a histogram's series."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names


async def test_alert_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (scripts/test installs Debian's prometheus)")
    check = await asyncio.create_subprocess_exec(
        promtool, "check", "rules", str(EXAMPLES / "alerts.yml"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(check.communicate(), 60)
    assert check.returncode == 0, out.decode()
    assert "SUCCESS: 7 rules found" in out.decode()


async def test_every_metric_the_rules_and_dashboard_name_is_on_a_live_servers_metrics(
    start: Start,
) -> None:
    server = await start()
    named = named_metrics()
    assert {"faultplane_active_faults", "faultplane_xds_nacks_total"} <= named
    missing = named - exposed_names(await metrics_text(server))
    assert not missing, f"named by examples/observability but not on /metrics: {missing}"
