"""Bounded memory and retention (issue 12).

- Finished injections leave the scheduler's memory beyond a recent window (default 1000);
  the API (`GetInjection`, `ListInjections` with its filters and pages) and the CLI
  (`faultplane get`, `faultplane ls`) still find every one, from the store.
- SLO readings per injection are bounded in memory (thinned, never synthesised) while the
  store keeps every one; the thinning keeps what the verdict needs.
- `faultplane serve --retain-days D` prunes injections that finished more than D days ago,
  with their transitions and readings, and never the audit log: the chain still verifies.

In-process servers here use the real gRPC API over loopback with fake sidecars (real ADS
clients); the retention test runs `faultplane serve` as a child process. CLI calls are
child processes started with asyncio, so the in-process server keeps serving meanwhile.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
import yaml

from faultplane.demo.launcher import grpc_serving
from faultplane.demo.processes import Child, wait_until
from faultplane.lifecycle.approval import ApprovalPolicy
from faultplane.lifecycle.scheduler import NotFound
from faultplane.model.injection import SloReading
from faultplane.model.mesh import Mesh
from faultplane.model.readings import MAX_READINGS, RECENT_READINGS, bound_readings, readable
from faultplane.server.control import ControlServer
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests.conftest import SLO_FILE, server_config
from tests.fake_sidecar import fake_sidecars, start_with_sidecars
from tests.helpers import injection_request, rpc_error, run_cli, wait_state

INBOUND = {"selector": "", "max_pods": 4, "upstream": None}
ABORT = {"type": "abort", "http_status": 503}
START_TIMEOUT = 60.0


@dataclass
class Served:
    server: ControlServer
    stub: faultplane_pb2_grpc.FaultServiceStub

    @property
    def api(self) -> str:
        return f"127.0.0.1:{self.server.api_port}"


Start = Callable[..., Awaitable[Served]]


@pytest_asyncio.fixture
async def start(mesh: Mesh, tmp_path: Path) -> AsyncIterator[Start]:
    """An in-process server (local auth, its own store) with payments-api's four pods as
    fake sidecars; stopped, with its sidecars and channel, afterwards."""
    async with AsyncExitStack() as stack:
        servers = 0

        async def start_server(**config: Any) -> Served:
            nonlocal servers
            db = tmp_path / f"server-{servers}" / "faultplane.db"
            servers += 1
            server, channel = await start_with_sidecars(
                stack,
                server_config(mesh, db_path=db, **config),
                list(mesh.services["payments-api"].pods),
            )
            return Served(server, faultplane_pb2_grpc.FaultServiceStub(channel))

        yield start_server


cli = run_cli


async def ok(*args: str) -> str:
    code, out, err = await cli(*args)
    assert code == 0, f"faultplane {' '.join(args)}: exit {code}: {err}"
    return out


async def list_all(stub: faultplane_pb2_grpc.FaultServiceStub, **filters: Any) -> list[str]:
    """Every page of ListInjections, following the tokens."""
    ids: list[str] = []
    token = ""
    while True:
        page = await stub.ListInjections(
            pb.ListInjectionsRequest(page_size=70, page_token=token, **filters), timeout=30
        )
        ids += [injection.id for injection in page.injections]
        assert all(not injection.readings for injection in page.injections)
        if not (token := page.next_page_token):
            return ids


# --- memory ---------------------------------------------------------------------------


async def test_finished_injections_leave_memory_yet_the_api_and_cli_find_them(
    start: Start,
) -> None:
    # Two-person rule for every injection: each waits for approval (no push), then is
    # aborted, so they finish quickly and for real, one after the other. A window of 200
    # (the default is 1000) keeps the test short; the mechanism is the same.
    served = await start(approval=ApprovalPolicy(max_pods=0), keep_finished=200)
    scheduler, stub = served.server.scheduler, served.stub
    created: list[str] = []
    for _ in range(300):
        injection = await stub.CreateInjection(
            injection_request(target=INBOUND, fault=ABORT), timeout=30
        )
        await stub.AbortInjection(pb.AbortInjectionRequest(id=injection.id), timeout=30)
        created.append(injection.id)

    # Memory: the window of finished ones, no more (nothing is live).
    assert len(scheduler._injections) == scheduler.in_memory == 200
    oldest = created[0]
    with pytest.raises(NotFound):
        scheduler.get(oldest)

    # The API still finds the oldest, whole, from the store.
    found = await stub.GetInjection(pb.GetInjectionRequest(id=oldest), timeout=30)
    assert found.state == pb.ABORTED and found.request.target.service == "payments-api"
    assert [t.to_state for t in found.transitions] == [pb.PENDING_APPROVAL, pb.ABORTED]
    missing = await rpc_error(stub.GetInjection(pb.GetInjectionRequest(id="inj-nope")))
    assert missing.code() == grpc.StatusCode.NOT_FOUND

    # Every page (70 at a time: one crosses from memory into the store), newest first,
    # each id once, with the filters applied to both.
    assert await list_all(stub) == created[::-1]
    assert await list_all(stub, states=[pb.ABORTED], service="payments-api") == created[::-1]
    assert await list_all(stub, states=[pb.ACTIVE]) == []
    assert await list_all(stub, service="fraud-scoring") == []

    # And the CLI: `ls` pages through all of them, `get` shows the oldest's history.
    listed = json.loads(await ok("ls", "--json", "--api", served.api))
    assert [i["id"] for i in listed] == created[::-1]
    detail = await ok("get", oldest, "--api", served.api)
    assert f"injection   {oldest}" in detail
    assert "PENDING_APPROVAL -> ABORTED" in detail
    # Aborting an injection that finished long ago says so, as for a recent one.
    again = await rpc_error(stub.AbortInjection(pb.AbortInjectionRequest(id=oldest)))
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "already ABORTED" in (again.details() or "")


async def test_readings_are_bounded_in_memory_and_kept_whole_in_the_store(
    start: Start,
) -> None:
    # A long guard tick: the readings below are the only ones.
    served = await start(guard_tick=60.0)
    scheduler, stub = served.server.scheduler, served.stub
    steady = {"slo": "merchant-write-success", "min": 0.0, "abort_after": 60}
    request = injection_request(
        target=INBOUND, fault=ABORT, duration_seconds=600, steady_state=steady
    )
    created = await stub.CreateInjection(request, timeout=30)
    await wait_state(stub, created.id, {pb.ACTIVE})
    injection = scheduler.get(created.id)
    assert injection.activated_at is not None
    # 5000 one-second ticks: fine, except a 10-tick breach, a 20-tick unreadable stretch
    # and one real gap of 70 ticks without a reading (abort_after is 60: not "covered").
    fed: list[SloReading] = []
    for i in range(5000):
        if 2000 <= i < 2070:
            continue
        at = injection.activated_at + 1.0 + i
        if 1000 <= i < 1010:
            reading = SloReading(at, 0.5, True, float(i - 1000))
        elif 3000 <= i < 3020:
            reading = SloReading(at, None, True, float(i - 3000), error="unreadable")
        else:
            reading = SloReading(at, 0.999, False, 0.0)
        fed.append(reading)
        await scheduler.record_reading(created.id, reading)

    kept = injection.readings
    assert RECENT_READINGS <= len(kept) <= MAX_READINGS
    assert kept[-RECENT_READINGS:] == fed[-RECENT_READINGS:]  # the newest as they were
    assert set(kept) <= set(fed)  # thinned, never synthesised
    assert any(r.breach and r.breach_seconds == 9.0 and r.value == 0.5 for r in kept)
    # What the deadline verdict looks for, stretches of abort_after or longer without a
    # readable reading, is the same on the thinned list: the one real 71 s gap.
    assert long_gaps(kept, injection.activated_at, 60) == [71.0]
    assert long_gaps(fed, injection.activated_at, 60) == [71.0]

    stored = served.server.store.readings.load(created.id)
    assert len(stored) == len(fed)  # the store keeps every one
    shown = await stub.GetInjection(pb.GetInjectionRequest(id=created.id), timeout=30)
    assert len(shown.readings) == len(kept)
    await stub.AbortInjection(pb.AbortInjectionRequest(id=created.id), timeout=30)


def gaps(readings: list[SloReading], since: float) -> list[float]:
    """Stretches without a readable reading, as the deadline verdict sees them."""
    seen = [since] + [r.at for r in readings if readable(r) and r.at >= since]
    return [later - earlier for earlier, later in itertools.pairwise(seen)]


def long_gaps(readings: list[SloReading], since: float, abort_after: float) -> list[float]:
    return [round(gap, 3) for gap in gaps(readings, since) if gap >= abort_after]


def max_unread(readings: list[SloReading], since: float) -> float:
    return max(gaps(readings, since))


def test_thinning_a_day_of_readings_with_a_short_abort_after_stays_bounded() -> None:
    """Too many readable readings to keep every gap under abort_after: the fallback keeps
    the count bounded, keeps the newest whole, and gaps only ever look longer (a verdict
    can become inconclusive, never falsely "held")."""
    whole = [SloReading(float(i), 0.999, False, 0.0) for i in range(86_400)]
    whole[50_000] = SloReading(50_000.0, 0.2, True, 0.0)
    readings: list[SloReading] = []
    for reading in whole:  # as the scheduler records them, one tick at a time
        readings.append(reading)
        bound_readings(readings, abort_after=2.0, since=0.0)
        assert len(readings) <= MAX_READINGS
    assert readings[-RECENT_READINGS:] == whole[-RECENT_READINGS:]
    assert readings[0] == whole[0]
    assert max_unread(readings, 0.0) >= max_unread(whole, 0.0)
    assert any(r.breach for r in readings)  # the worst of its stretch survives


# --- retention --------------------------------------------------------------------------


async def test_retain_days_prunes_old_injections_and_the_audit_still_verifies(
    mesh: Mesh, tmp_path: Path
) -> None:
    """A real `faultplane serve`: four injections end (the guard aborts each: fake
    sidecars have no stats, and unreadable is a breach), two are then made 40 days old,
    and a restart with --retain-days 30 prunes exactly those two."""
    db = tmp_path / "faultplane.db"
    argv = [
        sys.executable, "-m", "faultplane", "serve", "--mesh", str(tmp_path / "mesh.yaml"),
        "--auth", "local", "--db", str(db), "--slos", str(SLO_FILE),
        "--baseline-min-seconds", "0", "--guard-tick", "0.2",
    ]  # fmt: skip
    # The mesh with this test's free ports, for the child process.
    (tmp_path / "mesh.yaml").write_text(yaml.safe_dump(mesh.to_dict(), sort_keys=False))
    api = f"127.0.0.1:{mesh.control.api_port}"
    ids: list[str] = []
    server = Child("faultplane-serve", argv, tmp_path / "serve-1.log")
    try:
        server.start()
        await wait_until(lambda: grpc_serving(api), START_TIMEOUT, "serve", [server])
        pods = list(mesh.services["payments-api"].pods)
        async with (
            fake_sidecars(f"127.0.0.1:{mesh.control.xds_port}", mesh, pods),
            grpc.aio.insecure_channel(api) as channel,
        ):
            stub = faultplane_pb2_grpc.FaultServiceStub(channel)

            async def all_connected() -> bool:
                listed = await stub.ListSidecars(pb.ListSidecarsRequest(), timeout=10)
                return sum(s.connected for s in listed.sidecars) == len(pods)

            await wait_until(all_connected, START_TIMEOUT, "the fake sidecars", [server])
            for _ in range(4):
                request = injection_request(
                    target=INBOUND, fault=ABORT, steady_state={
                        "slo": "merchant-write-success", "min": 0.9, "abort_after": 1},
                )  # fmt: skip
                created = await stub.CreateInjection(request, timeout=30)
                await wait_state(stub, created.id, {pb.ABORTED}, timeout=30)
                ids.append(created.id)
        assert server.stop(timeout=20) == 0
        old, recent = ids[:2], ids[2:]
        with sqlite3.connect(db) as conn:
            for injection_id in ids:  # the guard read each one: readings to prune
                count = "SELECT COUNT(*) FROM slo_readings WHERE injection_id = ?"
                assert conn.execute(count, (injection_id,)).fetchone()[0] > 0
            conn.executemany(
                "UPDATE injections SET updated_at = updated_at - 40 * 86400 WHERE id = ?",
                [(i,) for i in old],
            )  # test-only time travel: they finished 40 days ago
            chain_before = conn.execute("SELECT seq, hash FROM audit ORDER BY seq").fetchall()

        server = Child("faultplane-serve", [*argv, "--retain-days", "30"], tmp_path / "s2.log")
        server.start()
        await wait_until(lambda: grpc_serving(api), START_TIMEOUT, "serve", [server])

        async def pruned() -> bool:
            code, _, err = await cli("get", old[0], "--api", api)
            return code == 1 and "NOT_FOUND" in err

        await wait_until(pruned, 30, "the old injections to be pruned", [server])
        for injection_id in old:
            code, _, err = await cli("get", injection_id, "--api", api)
            assert code == 1 and "NOT_FOUND" in err, err
        for injection_id in recent:
            assert f"injection   {injection_id}" in await ok("get", injection_id, "--api", api)
        listed = json.loads(await ok("ls", "--json", "--api", api))
        assert [i["id"] for i in listed] == recent[::-1]
        with sqlite3.connect(db) as conn:
            for table in ("transitions", "slo_readings"):
                left = {r[0] for r in conn.execute(f"SELECT DISTINCT injection_id FROM {table}")}
                assert left == set(recent), table
            chain_after = conn.execute("SELECT seq, hash FROM audit ORDER BY seq").fetchall()
        # The audit is untouched (every entry still there, as it was; the calls since are
        # appended), the chain verifies, and a pruned injection's story is still told.
        assert chain_after[: len(chain_before)] == chain_before
        code, out, err = await cli("audit", "verify", "--db", str(db))
        assert code == 0, out + err
        story = json.loads(await ok("audit", "--injection", old[0], "--json", "--api", api))
        assert {e["entry"].get("to") for e in story} >= {"ACTIVE", "ABORTED"}
        assert "store pruned" in server.log_path.read_text()
    finally:
        server.stop(timeout=20)


async def test_retain_days_zero_keeps_every_injection(start: Start) -> None:
    served = await start(approval=ApprovalPolicy(max_pods=0), retain_days=0.0)
    stub, server = served.stub, served.server
    created = await stub.CreateInjection(injection_request(target=INBOUND, fault=ABORT))
    await stub.AbortInjection(pb.AbortInjectionRequest(id=created.id), timeout=30)
    await server.journal.drain()
    with sqlite3.connect(server.store.path) as conn:
        conn.execute("UPDATE injections SET updated_at = 0")  # finished in 1970
    assert (await server.retention.prune_once())[0] == 0
    assert (await stub.GetInjection(pb.GetInjectionRequest(id=created.id))).id == created.id
    # The same store with a retention of a day prunes it.
    assert await server.retention.prune_injections(time.time() - 86400) == 1
    assert server.store.injections.get(created.id) is None
    assert server.store.audit.verify().ok
