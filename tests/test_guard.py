"""The steady-state guard on the real demo mesh under load, with both SLO sources.

One mesh (7 Envoys, apps, load generator) and one Prometheus serve the module; each test
starts its own control server on the mesh's ports (the sidecars reconnect), so every test
begins with a fresh baseline.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
import pytest_asyncio

from faultplane.demo.launcher import MeshRun
from faultplane.demo.ports import PortAllocator
from faultplane.demo.processes import wait_until
from faultplane.guard.steady_state import JITTER_SHARE
from faultplane.model.mesh import load_mesh
from faultplane.server.control import ControlServer, ServerConfig
from faultplane.slo.catalogue import parse_catalogue
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests.conftest import MESH_FILE
from tests.helpers import injection_request, rpc_error, wait_state
from tests.prometheus import running_prometheus

pytestmark = pytest.mark.asyncio(loop_scope="module")

TICK = 0.5
CATALOGUE = {
    "slos": {
        "payments-ok": {"service": "payments-api", "window_seconds": 2},
        "payments-ok-prom": {
            "service": "payments-api",
            "window_seconds": 3,
            "source": "prometheus",
        },
        "fraud-ok": {"service": "fraud-scoring", "window_seconds": 2},
    }
}
HARMLESS = {"type": "latency", "fixed_ms": 1}
ALL_PAYMENTS_INBOUND = {"selector": "", "max_pods": 4, "upstream": None}

Start = Callable[..., Awaitable[ControlServer]]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mesh_run(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MeshRun]:
    mesh = load_mesh(MESH_FILE).with_ports(PortAllocator())
    mesh = dataclasses.replace(mesh, load=dataclasses.replace(mesh.load, rate_per_second=40))
    run_dir = tmp_path_factory.mktemp("mesh")
    # A server while the sidecars start, so they are configured before load begins;
    # each test then brings its own.
    bootstrap = ControlServer(
        ServerConfig(mesh, mesh.control.xds_port, mesh.control.api_port, metrics_port=None)
    )
    await bootstrap.start()
    async with MeshRun(MESH_FILE, run_dir, mesh=mesh, spawn_server=False) as run:
        await bootstrap.stop(grace=0)
        yield run


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def prometheus(
    mesh_run: MeshRun, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    async with running_prometheus(mesh_run.mesh, tmp_path_factory.mktemp("prometheus")) as url:
        yield url


@pytest_asyncio.fixture(loop_scope="module")
async def start(mesh_run: MeshRun, prometheus: str) -> AsyncIterator[Start]:
    """Starts this test's control server; it is stopped (faults withdrawn) afterwards."""
    servers: list[ControlServer] = []

    async def start_server(
        baseline_min_seconds: float = 2.0, baseline_window: float = 30.0
    ) -> ControlServer:
        mesh = mesh_run.mesh
        config = ServerConfig(
            mesh=mesh,
            xds_port=mesh.control.xds_port,
            api_port=mesh.control.api_port,
            metrics_port=None,
            deadman_ttl=5.0,
            slos=parse_catalogue(CATALOGUE, mesh.services),
            prometheus_url=prometheus,
            guard_tick=TICK,
            baseline_min_seconds=baseline_min_seconds,
            baseline_window=baseline_window,
        )
        server = ControlServer(config)
        await server.start()
        servers.append(server)
        await wait_until(
            lambda: _all_connected(server, len(mesh.pods)), 30, "sidecars to reconnect"
        )
        await wait_until(
            lambda: _baseline_ready(server, baseline_min_seconds), 30, "baseline history"
        )
        return server

    yield start_server
    for server in servers:
        try:
            await server.scheduler.abort_all("test cleanup", "test")
        finally:
            await server.stop(grace=0)


async def _all_connected(server: ControlServer, count: int) -> bool:
    sidecars = server.registry.sidecars()
    return sum(s.connected for s in sidecars) == count and all(
        s.status(t).acked_version for s in sidecars for t in s.types
    )


async def _baseline_ready(server: ControlServer, seconds: float) -> bool:
    assert server.preflight is not None
    for name in CATALOGUE["slos"]:
        stats = await server.preflight.stats(name)
        if stats.seconds_covered < seconds or stats.p5 is None:
            return False
    return True


@pytest_asyncio.fixture(loop_scope="module")
async def stub(mesh_run: MeshRun) -> AsyncIterator[faultplane_pb2_grpc.FaultServiceStub]:
    async with grpc.aio.insecure_channel(mesh_run.api_address) as channel:
        yield faultplane_pb2_grpc.FaultServiceStub(channel)


def guarded(slo: str, minimum: float, abort_after: float, **extra) -> dict:
    return {"steady_state": {"slo": slo, "min": minimum, "abort_after": abort_after, **extra}}


async def run_to_end(stub, request: pb.InjectionRequest, timeout: float = 30) -> pb.Injection:
    created = await stub.CreateInjection(request)
    return await wait_state(stub, created.id, {pb.COMPLETED, pb.ABORTED, pb.FAILED}, timeout)


def first_breach(injection: pb.Injection) -> float:
    return next(r.at.ToNanoseconds() / 1e9 for r in injection.readings if r.breach)


async def test_breach_lasting_abort_after_aborts_without_a_human(start: Start, stub) -> None:
    await start()

    done = await run_to_end(
        stub,
        injection_request(
            target=ALL_PAYMENTS_INBOUND,
            fault={"type": "abort", "http_status": 503, "percentage": 50},
            duration_seconds=60,
            **guarded("payments-ok", 0.95, 1.5),
        ),
    )

    assert done.state == pb.ABORTED
    assert done.verdict == "hypothesis refuted"
    assert done.reason.startswith("steady-state breach: payments-ok")
    breach_start = first_breach(done)
    limit = done.breach_limit_at.ToNanoseconds() / 1e9
    assert limit == pytest.approx(breach_start + 1.5)
    # Event-based, not a wall-clock bound (a loaded machine delays ticks): the breach ran
    # unbroken from its start, and the guard aborted on the first reading at or past the
    # limit, whose breach duration, real elapsed time, is the one the reason quotes.
    timeline = [(_at(r) - breach_start, r.breach, r.breach_seconds) for r in done.readings]
    tolerance = JITTER_SHARE * TICK  # a reading a little early on its tick still counts
    past = [r for r in done.readings if r.breach and r.breach_seconds >= 1.5 - tolerance]
    assert past, timeline
    aborting = past[0]
    assert f"for {aborting.breach_seconds:.1f}s (abort_after 1.5s)" in done.reason, timeline
    assert all(r.breach for r in done.readings if breach_start <= _at(r) <= _at(aborting))
    assert _at(aborting) >= limit - tolerance
    assert done.ended_at.ToNanoseconds() / 1e9 >= _at(aborting)
    breaching = [r for r in done.readings if r.breach]
    assert breaching and all(r.value < 0.95 for r in breaching)


def _at(reading: pb.SloReading) -> float:
    return reading.at.ToNanoseconds() / 1e9


async def test_hypothesis_held_when_the_slo_holds_to_the_deadline(start: Start, stub) -> None:
    await start()

    done = await run_to_end(
        stub,
        injection_request(
            target=ALL_PAYMENTS_INBOUND, fault=HARMLESS, duration_seconds=2.5,
            **guarded("payments-ok", 0.95, 1),
        ),
    )  # fmt: skip

    assert done.state == pb.COMPLETED and done.verdict == "hypothesis held"
    # Five ticks fit in the run; "no breach" means something only if the guard did read
    # through it (two ticks may be skipped on a loaded machine).
    assert len(done.readings) >= 3
    assert not any(r.breach for r in done.readings)


async def test_unreadable_slo_counts_as_a_breach(start: Start, stub) -> None:
    """Cutting payments-api off fraud-scoring leaves fraud-scoring with no requests: its
    SLO cannot be read, and the guard does not fly blind."""
    await start()

    done = await run_to_end(
        stub,
        injection_request(
            target={"selector": "", "max_pods": 4, "upstream": "fraud-scoring"},
            fault={"type": "abort", "http_status": 503},
            duration_seconds=60,
            **guarded("fraud-ok", 0.5, 1),
        ),
    )

    assert done.state == pb.ABORTED and done.verdict == "hypothesis refuted"
    unreadable = [r for r in done.readings if not r.HasField("value")]
    assert unreadable and all(r.breach and "no requests" in r.error for r in unreadable)


async def test_compare_mode_ignores_a_mesh_wide_dip(start: Start, stub) -> None:
    await start()
    watched = await stub.CreateInjection(
        injection_request(
            target={"selector": "", "max_pods": 2, "upstream": "ledger"},
            fault=HARMLESS,
            duration_seconds=60,
            # The groups' windows start and end the dip a tick apart: allow for those edges.
            **guarded("payments-ok", 0.9, 2, compare="control"),
        )
    )
    await wait_state(stub, watched.id, {pb.ACTIVE})
    # Every payments-api pod fails while fraud-scoring is down: a dip shared by both groups.
    outage = await stub.CreateInjection(
        injection_request(
            target={"service": "fraud-scoring", "selector": "", "max_pods": 2, "upstream": None},
            fault={"type": "abort", "http_status": 503},
            duration_seconds=3,
            **guarded("fraud-ok", 0.0, 60),
        )
    )
    outage_done = await wait_state(stub, outage.id, {pb.COMPLETED}, timeout=20)

    # "Not aborted" is only worth asserting once the guard has read past the dip: after
    # its end has left the SLO window (2 s) of both groups, a tick later.
    settled = outage_done.ended_at.ToNanoseconds() / 1e9 + 2 + TICK
    current = await _read_past(stub, watched.id, settled)
    assert current.state == pb.ACTIVE, current.reason
    dipped = [r for r in current.readings if r.HasField("value") and r.value < 0.9]
    assert dipped, "the outage should have dipped the faulted group"
    shared = [r for r in dipped if r.control_value < 0.9]
    assert shared and not any(r.breach for r in shared)  # a shared dip is never a breach
    assert len(shared) >= len(dipped) / 2  # only the dip's edges may differ


async def _read_past(stub, injection_id: str, moment: float) -> pb.Injection:
    """The injection once the guard has read it after `moment` (or once it ended)."""
    latest: list[pb.Injection] = []

    async def read_past() -> bool:
        latest[:] = [await stub.GetInjection(pb.GetInjectionRequest(id=injection_id))]
        return latest[0].state != pb.ACTIVE or any(_at(r) >= moment for r in latest[0].readings)

    await wait_until(read_past, 20, f"a reading of {injection_id} after the dip")
    return latest[0]


async def test_compare_mode_catches_a_dip_of_the_faulted_group(start: Start, stub) -> None:
    await start()

    done = await run_to_end(
        stub,
        injection_request(
            target={"selector": "", "max_pods": 2, "upstream": None},
            fault={"type": "abort", "http_status": 503},
            duration_seconds=60,
            **guarded("payments-ok", 0.9, 1, compare="control"),
        ),
    )

    assert done.state == pb.ABORTED and done.verdict == "hypothesis refuted"
    breaching = [r for r in done.readings if r.breach]
    assert breaching and all(r.control_value >= 0.9 for r in breaching)


async def test_prometheus_source_reaches_the_same_verdicts(start: Start, stub) -> None:
    # A short baseline window, so that each refuted run's dip has left it before the next.
    await start(baseline_min_seconds=3.0, baseline_window=5.0)
    verdicts = {}
    for slo in ("payments-ok", "payments-ok-prom"):
        refuted = await run_to_end(
            stub,
            injection_request(
                target=ALL_PAYMENTS_INBOUND,
                fault={"type": "abort", "http_status": 503, "percentage": 60},
                duration_seconds=60,
                **guarded(slo, 0.9, 1),
            ),
        )
        await wait_until(lambda s=slo: _recovered(stub, s), 30, f"{slo} to recover")
        held = await run_to_end(
            stub,
            injection_request(
                target=ALL_PAYMENTS_INBOUND, fault=HARMLESS, duration_seconds=3,
                **guarded(slo, 0.9, 1),
            ),
        )  # fmt: skip
        verdicts[slo] = (refuted.verdict, held.verdict)

    assert verdicts["payments-ok"] == verdicts["payments-ok-prom"]
    assert verdicts["payments-ok"] == ("hypothesis refuted", "hypothesis held")


async def _recovered(stub, slo: str) -> bool:
    baseline = await stub.GetBaseline(pb.GetBaselineRequest(slo=slo, window_seconds=5))
    return baseline.HasField("min") and baseline.min >= 0.99


async def test_preflight_refuses_without_enough_baseline(start: Start, stub) -> None:
    server = await start()
    server.preflight.min_seconds = 3600  # as if the server had just started

    error = await rpc_error(
        stub.CreateInjection(injection_request(**guarded("payments-ok", 0.9, 1)))
    )

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "baseline for payments-ok" in error.details() and "3600s required" in error.details()


async def test_preflight_refuses_a_min_inside_the_normal_noise(start: Start, stub) -> None:
    await start()
    # Background noise: 20 % of fraud-scoring calls fail for a while.
    noise = await stub.CreateInjection(
        injection_request(
            target={"service": "fraud-scoring", "selector": "", "max_pods": 2, "upstream": None},
            fault={"type": "abort", "http_status": 503, "percentage": 20},
            duration_seconds=4,
            **guarded("fraud-ok", 0.0, 60),
        )
    )
    await wait_state(stub, noise.id, {pb.COMPLETED}, timeout=20)
    baseline = await stub.GetBaseline(pb.GetBaselineRequest(slo="payments-ok"))

    error = await rpc_error(
        stub.CreateInjection(injection_request(**guarded("payments-ok", 0.999, 1)))
    )

    assert baseline.p5 < 0.999
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "inside payments-ok's normal noise" in error.details()
    # The refusal quotes the p5 it judged by (taken a tick or two after GetBaseline's, so
    # not necessarily the same digits): the requested min must be above it.
    quoted = re.search(r"its p5 over the last \d+s is ([0-9.]+)", error.details())
    assert quoted is not None, error.details()
    assert float(quoted.group(1)) < 0.999


async def test_unknown_slo_is_refused_once_a_catalogue_is_configured(start: Start, stub) -> None:
    await start()

    error = await rpc_error(stub.CreateInjection(injection_request(**guarded("nope", 0.9, 1))))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("steady_state.slo: unknown SLO 'nope'")
