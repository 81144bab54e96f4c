"""Windows, blackouts and policy rules in a running server (issue 14), with fake
sidecars, real gRPC, the real CLI, and a clock the test moves: a queued experiment waits
with the reason the rule gives and starts when the clock (or the operator) lifts it; an
immediate one is FAILED_PRECONDITION naming the rule; blackouts and the policy are
persisted across a restart and every change is in the audit log."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format, timestamp_pb2

from faultplane.model.mesh import Mesh
from faultplane.scheduling.errors import ScheduleError
from faultplane.scheduling.graph import parse_graph
from faultplane.server.control import ControlServer
from faultplane.store import SqliteStore
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.v1 import faultplane_pb2_grpc
from tests.conftest import server_config
from tests.fake_sidecar import start_with_sidecars
from tests.helpers import injection_request, rpc_error, run_cli, wait_state
from tests.test_governance import Start, audit_entries, start  # noqa: F401 (a fixture)
from tests.test_queue import ABORT, ALL_PAYMENTS, HOUR, Clock

pytestmark = pytest.mark.asyncio

KOLKATA_WINDOW = {"weekdays": "Mon-Fri", "hours": ["10:00-16:00"], "tz": "Asia/Kolkata"}
QUEUE = "ON_CONFLICT_QUEUE"
FRAUD = {"service": "fraud-scoring", "selector": "", "max_pods": 2, "upstream": None}
LEDGER = {"service": "ledger", "selector": "", "max_pods": 1, "upstream": None}


def at(text: str) -> Clock:
    clock = Clock()
    clock.now = datetime.fromisoformat(text).timestamp()
    return clock


async def serve(
    stack: AsyncExitStack, mesh: Mesh, clock: Clock, db: Path | None = None
) -> tuple[ControlServer, faultplane_pb2_grpc.FaultServiceStub]:
    """payments-api and the two services it calls, with fake sidecars."""
    pods = [
        p for name in ("payments-api", "fraud-scoring", "ledger") for p in mesh.services[name].pods
    ]
    server, channel = await start_with_sidecars(
        stack, server_config(mesh, clock=clock, db_path=db), pods
    )
    return server, faultplane_pb2_grpc.FaultServiceStub(channel)


def payments(**top: object) -> pb.InjectionRequest:
    return injection_request(target=ALL_PAYMENTS, fault=ABORT, **top)


def api(server: ControlServer) -> tuple[str, str]:
    return ("--api", f"127.0.0.1:{server.api_port}")


async def test_a_window_holds_an_experiment_until_it_opens(mesh: Mesh) -> None:
    clock = at("2027-01-04T03:00:00+00:00")  # Monday 08:30 in Kolkata
    async with AsyncExitStack() as stack:
        server, stub = await serve(stack, mesh, clock)
        windowed = payments(windows=[KOLKATA_WINDOW], duration_seconds=600)
        refused = await rpc_error(stub.CreateInjection(windowed, timeout=30))
        assert refused.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "scheduling rule window/blackout: outside window Mon-Fri 10:00-16:00 " \
            "Asia/Kolkata" in (refused.details() or "")  # fmt: skip

        queued = await stub.CreateInjection(payments(windows=[KOLKATA_WINDOW], on_conflict=QUEUE))
        assert queued.state == pb.QUEUED
        assert queued.waiting_reason == "outside window Mon-Fri 10:00-16:00 Asia/Kolkata"
        rows = (await stub.ListQueue(pb.ListQueueRequest())).rows
        assert [(r.injection_id, r.status) for r in rows] == [(queued.id, "starts")]
        assert rows[0].start.ToDatetime(tzinfo=UTC) == datetime(2027, 1, 4, 4, 30, tzinfo=UTC)

        clock.now += HOUR  # 09:30 in Kolkata: still closed
        server.scheduler.replan()
        assert server.scheduler.get(queued.id).state.value == "QUEUED"
        clock.now += HOUR  # 10:30
        server.scheduler.replan()
        await wait_state(stub, queued.id, {pb.ACTIVE})


async def test_windows_are_validated_naming_the_field(mesh: Mesh, tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        server, stub = await serve(stack, mesh, Clock())
        bad = payments(windows=[
            {"weekdays": "Mon-Fri", "hours": ["10:00-16:00"], "tz": "Mars/Base"},
            {"weekdays": "Someday", "hours": ["10:00-11:00"], "tz": "UTC"},
            {"weekdays": "Sat", "hours": ["25:00-26:00"], "tz": "UTC"},
        ])  # fmt: skip
        error = await rpc_error(stub.CreateInjection(bad, timeout=30))
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        details = error.details() or ""
        assert "windows[0].tz: unknown time zone 'Mars/Base'" in details
        assert "windows[1].weekdays: unknown weekday 'Someday'" in details
        assert "windows[2].hours[0]: '25:00' is not a time of day" in details
        # The CLI flag reaches the same check.
        document = tmp_path / "x.json"
        document.write_text(json.dumps(_as_dict(payments())))
        code, _, err = await run_cli(
            "inject", "-f", str(document), "--window", "Mon-Fri 10:00-16:00 Mars/Base",
            *api(server),
        )  # fmt: skip
        assert code == 1 and "windows[0].tz: unknown time zone 'Mars/Base'" in err, err


def _as_dict(request: pb.InjectionRequest) -> dict[str, object]:
    return json_format.MessageToDict(request, preserving_proto_field_name=True)


async def test_blackouts_hold_experiments_and_are_persisted_and_audited(
    mesh: Mesh, tmp_path: Path
) -> None:
    clock = at("2027-01-09T12:00:00+00:00")  # Saturday
    db = tmp_path / "faultplane.db"
    async with AsyncExitStack() as stack:
        server, stub = await serve(stack, mesh, clock, db)
        code, out, err = await run_cli(
            "blackout", "add", "weekend", "--weekly", "Fri 16:00 - Mon 09:00",
            "--tz", "Europe/Berlin", "--json", *api(server),
        )  # fmt: skip
        assert code == 0, err
        weekend = json.loads(out)
        assert weekend["description"] == "weekend (Fri 16:00 - Mon 09:00 Europe/Berlin)"

        refused = await rpc_error(stub.CreateInjection(payments(), timeout=30))
        assert refused.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "blackout weekend (Fri 16:00 - Mon 09:00 Europe/Berlin) until 2027-01-11 " \
            "08:00 UTC" in (refused.details() or "")  # fmt: skip
        queued = await stub.CreateInjection(payments(on_conflict=QUEUE, duration_seconds=600))
        assert queued.waiting_reason == (
            "blackout weekend (Fri 16:00 - Mon 09:00 Europe/Berlin) until 2027-01-11 08:00 UTC"
        )
        # A one-off blackout on Monday from 08:05: a 10-minute run from 08:00 would run
        # into it, so the queue says it starts once that one is over.
        settlement = await stub.AddBlackout(pb.AddBlackoutRequest(
            name="month-end settlement", start=_ts("2027-01-11T08:05:00+00:00"),
            end=_ts("2027-01-11T10:00:00+00:00"),
        ))  # fmt: skip
        rows = (await stub.ListQueue(pb.ListQueueRequest())).rows
        assert rows[0].start.ToDatetime(tzinfo=UTC) == datetime(2027, 1, 11, 10, tzinfo=UTC)
        clock.now = datetime(2027, 1, 11, 8, 1, tzinfo=UTC).timestamp()
        server.scheduler.replan()
        assert server.scheduler.get(queued.id).waiting_reason.startswith(
            "would run into blackout month-end settlement"
        )
        bad = await rpc_error(stub.AddBlackout(pb.AddBlackoutRequest(
            name="x", weekly="Fri 16:00 - Mon 09:00", tz="Mars/Base")))  # fmt: skip
        assert bad.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert bad.details() == "tz: unknown time zone 'Mars/Base'"

    async with AsyncExitStack() as stack:  # a restart keeps both and the queue
        server, stub = await serve(stack, mesh, clock, db)
        code, out, err = await run_cli("blackout", "ls", "--json", *api(server))
        assert code == 0, err
        assert sorted(b["name"] for b in json.loads(out)) == ["month-end settlement", "weekend"]
        code, _, err = await run_cli("blackout", "rm", settlement.id, *api(server))
        assert code == 0, err
        await wait_state(stub, queued.id, {pb.ACTIVE})  # removing it re-planned the queue
    methods = audited(db)
    # The refused AddBlackout (bad tz) is audited too, but not as OK.
    assert methods.count("AddBlackout") == 2
    assert methods.count("RemoveBlackout") == 1 and "ListBlackouts" in methods


def audited(db: Path) -> list[str]:
    """The methods of the accepted calls in the store's audit log, in order."""
    with SqliteStore(db) as store:
        entries = store.audit.entries(None, None, 10_000, 0, 10**9)
    return [
        e.entry["method"] for e in entries
        if e.entry.get("kind") == "call" and e.entry.get("outcome") == "OK"
    ]  # fmt: skip


def _ts(text: str) -> timestamp_pb2.Timestamp:
    return _at(datetime.fromisoformat(text).timestamp())


async def test_cooldown_caps_and_the_dependency_rule(mesh: Mesh, tmp_path: Path) -> None:
    clock = Clock()
    db = tmp_path / "faultplane.db"
    async with AsyncExitStack() as stack:
        server, stub = await serve(stack, mesh, clock, db)
        code, out, err = await run_cli(
            "policy", "set", "--cooldown", "1h", "--dependency-rule", "on", "--json",
            *api(server),
        )  # fmt: skip
        assert code == 0, err
        assert json.loads(out)["cooldown_seconds"] == 3600 and json.loads(out)["dependency_rule"]

        first = await stub.CreateInjection(payments(duration_seconds=600), timeout=30)
        await wait_state(stub, first.id, {pb.ACTIVE})
        # fraud-scoring is a dependency of payments-api: the same request path.
        fraud = injection_request(target=FRAUD, fault=ABORT)
        refused = await rpc_error(stub.CreateInjection(fraud, timeout=30))
        assert refused.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert (
            f"scheduling rule dependency: waits for {first.id} (payments-api depends on "
            "fraud-scoring: same request path)"
        ) in (refused.details() or "")
        await stub.AbortInjection(pb.AbortInjectionRequest(id=first.id, reason="next"))
        await wait_state(stub, first.id, {pb.ABORTED})

        until = datetime.fromtimestamp(clock.now + HOUR, UTC)
        cooling = f"cool-down of payments-api until {until:%Y-%m-%d %H:%M} UTC"
        refused = await rpc_error(stub.CreateInjection(payments(), timeout=30))
        assert f"scheduling rule cool-down: {cooling}" in (refused.details() or "")
        queued = await stub.CreateInjection(payments(on_conflict=QUEUE), timeout=30)
        assert queued.waiting_reason == cooling

        await stub.SetPolicy(pb.SchedulingPolicy(max_fleet=1, cooldown_seconds=3600))
        unrelated = await stub.CreateInjection(fraud, timeout=30)  # rule off: starts
        await wait_state(stub, unrelated.id, {pb.ACTIVE})
        ledger = injection_request(target=LEDGER, fault=ABORT)
        capped = await rpc_error(stub.CreateInjection(ledger, timeout=30))
        assert capped.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert "scheduling rule max_fleet: fleet-wide limit: 1 of 1 running" in (
            capped.details() or ""
        )

    async with AsyncExitStack() as stack:  # the policy and the cool-down survive a restart
        server, stub = await serve(stack, mesh, clock, db)
        policy = await stub.GetPolicy(pb.GetPolicyRequest())
        assert (policy.max_fleet, policy.cooldown_seconds) == (1, 3600)
        assert server.scheduler.get(queued.id).waiting_reason == cooling
        clock.now += HOUR
        await stub.SetPolicy(pb.SchedulingPolicy(cooldown_seconds=3600))  # no fleet cap
        await wait_state(stub, queued.id, {pb.ACTIVE})
        code, out, err = await run_cli("policy", "show", *api(server))
        assert code == 0 and "cool-down        3600s per service" in out, err


async def test_the_longest_untested_service_starts_first_whatever_the_priority(
    mesh: Mesh,
) -> None:
    async with AsyncExitStack() as stack:
        server, stub = await serve(stack, mesh, Clock())
        await stub.SetPolicy(pb.SchedulingPolicy(max_fleet=1, dependency_rule=True))
        tested = await stub.CreateInjection(injection_request(target=FRAUD, fault=ABORT))
        await stub.AbortInjection(pb.AbortInjectionRequest(id=tested.id, reason="tested"))
        ledger = await stub.CreateInjection(injection_request(target=LEDGER, fault=ABORT))
        await wait_state(stub, ledger.id, {pb.ACTIVE})
        # fraud-scoring was just tested; payments-api never was. They share a request
        # path, so only one of them can start when the ledger experiment ends.
        recent = await stub.CreateInjection(
            injection_request(target=FRAUD, fault=ABORT, priority=100, on_conflict=QUEUE)
        )
        never = await stub.CreateInjection(payments(on_conflict=QUEUE))
        assert recent.state == never.state == pb.QUEUED
        rows = {r.injection_id: r for r in (await stub.ListQueue(pb.ListQueueRequest())).rows}
        assert rows[never.id].start.ToSeconds() < rows[recent.id].start.ToSeconds()

        await stub.AbortInjection(pb.AbortInjectionRequest(id=ledger.id, reason="next"))
        await wait_state(stub, never.id, {pb.ACTIVE})
        waiting = server.scheduler.get(recent.id)
        assert waiting.state.value == "QUEUED"
        assert waiting.waiting_reason == (
            f"waits for {never.id} (payments-api depends on fraud-scoring: same request path)"
        )


async def test_a_declared_dependency_graph_for_overlay_mode(tmp_path: Path) -> None:
    graph = parse_graph({"dependencies": {"checkout": ["payments"], "payments": ["ledger"]}})
    assert graph.on_same_path("checkout", "ledger") and not graph.on_same_path("ledger", "x")
    with pytest.raises(ScheduleError, match=r"dependencies\.checkout: expected a list"):
        parse_graph({"checkout": "payments"})
    bad = tmp_path / "graph.yaml"
    bad.write_text("checkout: payments\n")
    code, _, err = await run_cli(
        "serve", "--overlay", "--db", str(tmp_path / "x.db"), "--dependency-graph", str(bad)
    )
    assert code == 2, err
    assert f"--dependency-graph {bad}: dependencies.checkout: expected a list" in err


async def test_who_may_change_blackouts_and_the_policy_and_the_audit_names_them(
    start: Start,  # noqa: F811
) -> None:
    """With tokens: a viewer reads only; an operator may add a blackout (it only holds
    experiments back) but not lift one or change the policy; an admin may."""
    api = await start()
    weekly = pb.AddBlackoutRequest(name="weekend", weekly="Sat 00:00 - Mon 00:00", tz="UTC")
    denied = await rpc_error(api.call("AddBlackout", weekly, "vic"))
    assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
    added = await api.call("AddBlackout", weekly, "alice")
    assert added.created_by == "alice"
    assert len((await api.call("ListBlackouts", pb.ListBlackoutsRequest(), "vic")).blackouts) == 1
    for method, message in (
        ("RemoveBlackout", pb.RemoveBlackoutRequest(id=added.id)),
        ("SetPolicy", pb.SchedulingPolicy(max_fleet=3)),
    ):
        denied = await rpc_error(api.call(method, message, "alice"))
        assert denied.code() is grpc.StatusCode.PERMISSION_DENIED, method
        assert "needs oncall or admin" in (denied.details() or "")
    policy = await api.call("SetPolicy", pb.SchedulingPolicy(max_fleet=3), "root")
    assert (policy.max_fleet, policy.updated_by) == (3, "root")
    await api.call("RemoveBlackout", pb.RemoveBlackoutRequest(id=added.id), "root")

    calls = [(e["method"], e["principal"], e["outcome"]) for e in await audit_entries(api)
             if e.get("method") in ("AddBlackout", "RemoveBlackout", "SetPolicy")]  # fmt: skip
    assert calls == [
        ("AddBlackout", "vic", "PERMISSION_DENIED"),
        ("AddBlackout", "alice", "OK"),
        ("RemoveBlackout", "alice", "PERMISSION_DENIED"),
        ("SetPolicy", "alice", "PERMISSION_DENIED"),
        ("SetPolicy", "root", "OK"),
        ("RemoveBlackout", "root", "OK"),
    ]


async def test_a_blackout_added_under_a_running_experiment_names_it_and_stops_nothing(
    mesh: Mesh,
) -> None:
    clock = Clock()
    async with AsyncExitStack() as stack:
        _, stub = await serve(stack, mesh, clock)
        running = await stub.CreateInjection(payments(duration_seconds=600), timeout=30)
        await wait_state(stub, running.id, {pb.ACTIVE})
        soon = pb.AddBlackoutRequest(
            name="soon", start=_at(clock.now + 60), end=_at(clock.now + HOUR)
        )
        later = pb.AddBlackoutRequest(name="later", start=_at(clock.now + 2 * HOUR),
                                      end=_at(clock.now + 3 * HOUR))  # fmt: skip
        assert list((await stub.AddBlackout(soon)).overlapping) == [running.id]
        assert list((await stub.AddBlackout(later)).overlapping) == []
        still = await stub.GetInjection(pb.GetInjectionRequest(id=running.id))
        assert still.state == pb.ACTIVE


def _at(seconds: float) -> timestamp_pb2.Timestamp:
    stamp_ = timestamp_pb2.Timestamp()
    stamp_.FromNanoseconds(int(seconds * 1e9))
    return stamp_
