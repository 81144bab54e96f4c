"""A control-server outage during an injection is in its history (issue 12).

A real `faultplane serve` with real Envoy sidecars runs an injection; the server is
SIGKILLed (or stopped with SIGTERM), the test watches the fault go off at the sidecars
when the lease lapses, then starts the server again on the same store. `faultplane get`
must then show an ACTIVE -> ACTIVE transition that tells the outage: when the server was
last alive (or stopped), by when at the latest the fault was off, and when it resumed;
the times must agree with what the test saw. The transition is in the audit chain too.
In-process servers with fake sidecars cover what the history says when less is known.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from faultplane.demo.launcher import MeshRun
from faultplane.demo.processes import wait_until
from faultplane.lifecycle.uptime import HEARTBEAT_SECONDS
from faultplane.model.mesh import Mesh
from faultplane.render.faults import INJECTION_HEADER
from faultplane.server.control import ControlServer
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests.conftest import MESH_FILE, server_config
from tests.fake_sidecar import fake_sidecars
from tests.helpers import injection_request, run_cli, send, wait_state

pytestmark = pytest.mark.asyncio(loop_scope="module")

TTL = 3.0
ALL_PAYMENTS = {"selector": "", "max_pods": 4, "upstream": None}
ABORT = {"type": "abort", "http_status": 503}
STAMP = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def run(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[MeshRun]:
    args = ("--deadman-ttl", f"{TTL:g}", "--ack-timeout", "20", "--baseline-min-seconds", "0")
    async with MeshRun(
        MESH_FILE, tmp_path_factory.mktemp("mesh"), load=False, server_args=args
    ) as mesh_run:
        yield mesh_run


async def cli(run: MeshRun, *args: str) -> str:
    """`faultplane ARGS --api ...` as a child process; its stdout (exit 0 required)."""
    code, out, err = await run_cli(*args, "--api", run.api_address)
    assert code == 0, f"faultplane {' '.join(args)}: {err}"
    return out


def ingress(run: MeshRun) -> str:
    return f"http://127.0.0.1:{run.mesh.pod('payments-api-1').ports.ingress}/merchant-write"


async def fault_is(run: MeshRun, on: bool) -> bool:
    (reply,) = await send(ingress(run), method="POST")
    return (reply.status == 503 and INJECTION_HEADER in reply.headers) == on


async def active_injection(run: MeshRun) -> str:
    """Every sidecar connected to the current server, then a 503 on all of payments-api
    for two minutes, ACTIVE and seen in traffic."""

    async def converged() -> bool:
        async with grpc.aio.insecure_channel(run.api_address) as channel:
            stub = faultplane_pb2_grpc.FaultServiceStub(channel)
            sidecars = (await stub.ListSidecars(pb.ListSidecarsRequest(), timeout=10)).sidecars
        return len(sidecars) == len(run.mesh.pods) and all(s.connected for s in sidecars)

    await wait_until(converged, 60, "every sidecar to connect")
    async with grpc.aio.insecure_channel(run.api_address) as channel:
        stub = faultplane_pb2_grpc.FaultServiceStub(channel)
        request = injection_request(target=ALL_PAYMENTS, fault=ABORT, duration_seconds=120)
        created = await stub.CreateInjection(request, timeout=30)
        await wait_state(stub, created.id, {pb.ACTIVE}, timeout=30)
    await wait_until(lambda: fault_is(run, on=True), 20, "the fault in traffic")
    return created.id


async def fault_off_after_outage(run: MeshRun, lapsed_by: float) -> float:
    """When the test first saw the fault gone at a sidecar (the lease lapsed); returns
    once the latest moment the lease could run to (`lapsed_by`) has passed too, so the
    restarted server finds the outage over, as the history will say."""
    await wait_until(lambda: fault_is(run, on=False), TTL + 20, "the lease to lapse")
    seen_off = time.time()

    async def lapsed() -> bool:
        return time.time() > lapsed_by + 0.5

    await wait_until(lapsed, lapsed_by + 5 - time.time(), "the lease's latest end")
    return seen_off


def stamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()


async def outage_entry(run: MeshRun, injection_id: str) -> str:
    """The outage transition's reason, from `faultplane get --json`, after checking the
    human view shows it in the history too."""
    detail = await cli(run, "get", injection_id)
    assert "ACTIVE -> ACTIVE  control server restarted:" in detail, detail
    shown = json.loads(await cli(run, "get", injection_id, "--json"))
    states = [
        (t.get("from_state", "STATE_UNSPECIFIED"), t["to_state"]) for t in shown["transitions"]
    ]
    assert states == [("STATE_UNSPECIFIED", "PENDING"), ("PENDING", "ACTIVE"), ("ACTIVE", "ACTIVE")]
    assert shown["state"] == "ACTIVE"
    (outage,) = [t for t in shown["transitions"] if t.get("from_state") == "ACTIVE"]
    audit = json.loads(await cli(run, "audit", "--injection", injection_id, "--json"))
    audited = [e["entry"] for e in audit if e["entry"].get("from") == "ACTIVE"]
    assert [e["reason"] for e in audited] == [outage["reason"]]
    return str(outage["reason"])


async def test_a_crash_mid_injection_shows_when_the_fault_was_off(run: MeshRun) -> None:
    injection_id = await active_injection(run)
    killed_at = time.time()
    assert run.server is not None
    run.server.kill()  # SIGKILL: no chance to say goodbye
    seen_off = await fault_off_after_outage(run, killed_at + 2 * HEARTBEAT_SECONDS + TTL)
    restarting_at = time.time()
    run.restart_server()
    await run.wait_server_healthy()
    healthy_at = time.time()

    reason = await outage_entry(run, injection_id)
    match = re.search(
        rf"the previous one crashed, last seen alive at {STAMP}; fault off from {STAMP} at "
        rf"the latest \(its {TTL:g}s lease lapsed\) to {STAMP}; resumed at {STAMP} with "
        r"([\d.]+)s left",
        reason,
    )
    assert match, reason
    alive, off, back, resumed = (stamp(match[i]) for i in range(1, 5))
    # Stamps are whole seconds (truncated): allow one second each way.
    # A beat may run late by up to an interval; guard readings (every second) count too.
    assert killed_at - 2 * HEARTBEAT_SECONDS - 1 <= alive <= killed_at + 1, reason
    assert seen_off <= off + 1, "the fault was still on after the time the history gives"
    assert off <= killed_at + 2 * HEARTBEAT_SECONDS + TTL + 1, reason
    assert restarting_at - 1 <= back == resumed <= healthy_at + 1, reason
    assert 0 < float(match[5]) < 120

    # Resumed for real: the fault is back in traffic, and its history keeps the outage
    # after it ends.
    await wait_until(lambda: fault_is(run, on=True), 60, "the fault to be resumed")
    await cli(run, "abort", injection_id)
    detail = await cli(run, "get", injection_id)
    assert re.search(r"PENDING -> ACTIVE .*\n.*ACTIVE -> ACTIVE .*\n.*ACTIVE -> ABORTED", detail)


async def test_a_clean_stop_mid_injection_shows_when_it_stopped(run: MeshRun) -> None:
    injection_id = await active_injection(run)
    assert run.server is not None
    stopping_at = time.time()
    assert run.server.stop(timeout=20) == 0  # SIGTERM: records its stop, leaves the fault
    stopped_by = time.time()
    seen_off = await fault_off_after_outage(run, stopped_by + TTL)
    run.restart_server()
    await run.wait_server_healthy()

    reason = await outage_entry(run, injection_id)
    match = re.search(rf"the previous one stopped at {STAMP}; fault off from {STAMP}", reason)
    assert match, reason
    stopped, off = stamp(match[1]), stamp(match[2])
    assert stopping_at - 1 <= stopped <= stopped_by + 1, reason
    assert off == stopped + TTL, reason  # whole seconds: floor(t + 3) == floor(t) + 3
    assert seen_off <= off + 1, "the fault was still on after the time the history gives"
    await cli(run, "abort", injection_id)


# --- in process: what the history says when less is known ------------------------------


async def _restart_in_process(mesh: Mesh, db: Path, ttl: float, forget_run: bool) -> str:
    """An injection made ACTIVE on one in-process server (fake sidecars), a clean stop,
    a second server on the same store; the outage transition's reason."""
    first = ControlServer(server_config(mesh, db_path=db, deadman_ttl=ttl))
    await first.start()
    try:
        pods = list(mesh.services["payments-api"].pods)
        async with fake_sidecars(f"127.0.0.1:{first.xds_port}", mesh, pods):

            async def connected() -> bool:
                return sum(s.connected for s in first.registry.sidecars()) == len(pods)

            await wait_until(connected, 20, "the fake sidecars to connect")
            async with grpc.aio.insecure_channel(f"127.0.0.1:{first.api_port}") as channel:
                stub = faultplane_pb2_grpc.FaultServiceStub(channel)
                request = injection_request(target=ALL_PAYMENTS, fault=ABORT)
                created = await stub.CreateInjection(request, timeout=30)
                await wait_state(stub, created.id, {pb.ACTIVE}, timeout=30)
    finally:
        await first.stop(grace=0)
    if forget_run:  # a store written before servers recorded their runs
        with sqlite3.connect(db) as conn:
            conn.execute("DELETE FROM settings WHERE key = 'server_run'")
    second = ControlServer(server_config(mesh, db_path=db, deadman_ttl=ttl))
    await second.start()
    try:
        resumed = second.scheduler.get(created.id)
        (outage,) = [t for t in resumed.transitions if t.from_state is t.to_state]
        stored = second.store.injections.get(created.id)
        assert stored is not None and stored.state == "ACTIVE"
        return outage.reason
    finally:
        await second.stop(grace=0)


async def test_a_restart_within_the_lease_says_the_fault_may_have_stayed_on(
    mesh: Mesh, tmp_path: Path
) -> None:
    reason = await _restart_in_process(mesh, tmp_path / "db", ttl=600.0, forget_run=False)
    assert "the previous one stopped at" in reason
    assert "its 600s lease may have outlived the outage" in reason
    assert "fault off from" not in reason


async def test_without_a_record_of_the_previous_server_the_history_says_so(
    mesh: Mesh, tmp_path: Path
) -> None:
    reason = await _restart_in_process(mesh, tmp_path / "db", ttl=3.0, forget_run=True)
    assert "when the previous one stopped is not on record" in reason
    assert re.search(rf"last record of this injection is from {STAMP}", reason), reason
