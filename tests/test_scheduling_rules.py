"""The rules' reasons to wait, expiry, coverage order, and the forecast timeline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from faultplane.scheduling.errors import ScheduleError
from faultplane.scheduling.graph import DependencyGraph
from faultplane.scheduling.model import Experiment, Footprint, Run
from faultplane.scheduling.packer import State, forecast, plan
from faultplane.scheduling.rules import Policy, Situation, parse_policy, why_waits
from faultplane.scheduling.timeline import rows
from faultplane.scheduling.windows import parse_windows

NOW = datetime(2026, 12, 3, 13, 5, tzinfo=UTC)  # Thursday
GRAPH = DependencyGraph.of(
    [("checkout", "payments-api"), ("payments-api", "fraud-scoring"), ("search", "catalog")]
)


def exp(
    id: str, service: str, sidecar: str | None = None, scope: str = "inbound", **kw: object
) -> Experiment:
    slots = frozenset({(sidecar or f"{service}-0", scope)})
    fields: dict[str, object] = {"duration": timedelta(minutes=30), "submitted_at": NOW}
    fields.update(kw)
    return Experiment(id, Footprint(frozenset({service}), slots), **fields)  # type: ignore[arg-type]


def reason(candidate: Experiment, policy: Policy, *runs: Run, last: dict | None = None) -> str:
    wait = why_waits(candidate, Situation(NOW, runs, last or {}), policy)
    return "" if wait is None else wait.reason


def test_same_sidecar_and_scope_waits_for_the_running_experiment() -> None:
    running = Run(exp("inj-a1", "payments-api", "payments-api-2"), NOW - timedelta(minutes=5))
    candidate = exp("inj-b2", "payments-api", "payments-api-2")
    assert reason(candidate, Policy(), running) == (
        "waits for inj-a1 (same sidecar payments-api-2, same scope)"
    )
    other_scope = exp("inj-c3", "payments-api", "payments-api-2", scope="upstream:fraud-scoring")
    assert reason(other_scope, Policy(), running) == ""


def test_dependency_rule_is_transitive_and_needs_both_to_allow_it() -> None:
    running = Run(exp("inj-a1", "checkout"), NOW)
    deep = exp("inj-b2", "fraud-scoring")  # checkout -> payments-api -> fraud-scoring
    policy = Policy(graph=GRAPH)
    assert reason(deep, policy, running) == (
        "waits for inj-a1 (checkout depends on fraud-scoring: same request path)"
    )
    assert reason(exp("inj-c3", "search"), policy, running) == ""
    allowed = exp("inj-b2", "fraud-scoring", allow_dependent=True)
    assert reason(allowed, policy, running) != ""  # the running one did not allow it
    both = Run(exp("inj-a1", "checkout", allow_dependent=True), NOW)
    assert reason(allowed, policy, both) == ""


def test_cool_down_says_until_when() -> None:
    policy = Policy(cooldown=timedelta(hours=1))
    last = {"fraud-scoring": NOW - timedelta(minutes=60)}
    assert reason(exp("x", "fraud-scoring"), policy, last=last) == ""
    last = {"fraud-scoring": datetime(2026, 12, 3, 12, 30, tzinfo=UTC)}
    assert reason(exp("x", "fraud-scoring"), policy, last=last) == (
        "cool-down of fraud-scoring until 2026-12-03 13:30 UTC"
    )


def test_limits_per_service_and_fleet_wide() -> None:
    one = Run(exp("inj-a1", "search", "search-0"), NOW)
    two = Run(exp("inj-a2", "catalog", "catalog-0"), NOW + timedelta(minutes=1))
    assert reason(exp("x", "search", "search-1"), Policy(max_per_service=1), one) == (
        "limit for search: 1 of 1 running"
    )
    wait = why_waits(exp("x", "cart"), Situation(NOW, (two, one), {}), Policy(max_fleet=2))
    assert wait is not None and wait.reason == "fleet-wide limit: 2 of 2 running"
    assert wait.until == one.ends_at and wait.blockers == ("inj-a1", "inj-a2")


def test_frozen_and_window_reasons_come_first() -> None:
    assert reason(exp("x", "search"), Policy(frozen=True)) == "frozen"
    office = parse_windows([{"weekdays": "Mon-Fri", "hours": "10:00-16:00", "tz": "Asia/Kolkata"}])
    assert reason(exp("x", "search", windows=office), Policy()) == (
        "outside window Mon-Fri 10:00-16:00 Asia/Kolkata"
    )


def test_a_deadline_passed_expires_instead_of_starting() -> None:
    late = exp("inj-late", "search", not_after=NOW)
    early = exp("inj-ok", "catalog", not_after=NOW + timedelta(seconds=1))
    decided = plan(State(NOW, queue=(late, early)), Policy())
    assert [e.id for e in decided.start] == ["inj-ok"]
    assert decided.expire == ((late, "not started by its deadline 2026-12-03 13:05 UTC"),)


def test_coverage_order_prefers_the_service_tested_longest_ago() -> None:
    recent = exp("inj-1", "search", priority=5, submitted_at=NOW - timedelta(hours=2))
    stale = exp("inj-2", "catalog")
    last = {"search": NOW - timedelta(hours=1), "catalog": NOW - timedelta(days=3)}
    decided = plan(State(NOW, queue=(recent, stale), last_started=last), Policy(max_fleet=1))
    assert [e.id for e in decided.start] == ["inj-2"]
    assert decided.waiting[0][1].reason == "fleet-wide limit: 1 of 1 running"
    never = exp("inj-3", "cart", submitted_at=NOW + timedelta(minutes=1))
    decided = plan(State(NOW, queue=(stale, never), last_started=last), Policy(max_fleet=1))
    assert [e.id for e in decided.start] == ["inj-3"]  # never tested beats stale


def test_forecast_runs_two_conflicting_ones_after_each_other_and_the_third_alongside() -> None:
    first = exp("inj-a", "payments-api", "payments-api-2")
    second = exp("inj-b", "payments-api", "payments-api-2", submitted_at=NOW + timedelta(seconds=1))
    third = exp("inj-c", "search", duration=timedelta(minutes=10))
    future = forecast(State(NOW, queue=(first, second, third)), Policy(), timedelta(hours=3))
    timeline = [(ev.at - NOW, ev.kind, ev.experiment) for ev in future.events]
    assert timeline == [
        (timedelta(0), "start", "inj-a"),
        (timedelta(0), "start", "inj-c"),
        (timedelta(minutes=10), "end", "inj-c"),
        (timedelta(minutes=30), "end", "inj-a"),
        (timedelta(minutes=30), "start", "inj-b"),
        (timedelta(minutes=60), "end", "inj-b"),
    ]
    assert future.state.queue == () and future.waiting == ()


def test_forecast_stops_at_the_horizon_with_the_reasons_of_what_still_waits() -> None:
    office = parse_windows([{"weekdays": "Mon-Fri", "hours": "10:00-16:00", "tz": "Asia/Kolkata"}])
    waiting = exp("inj-w", "search", windows=office)
    future = forecast(State(NOW, queue=(waiting,)), Policy(), timedelta(hours=2))
    assert future.events == ()
    assert [w.reason for _, w in future.waiting] == [
        "outside window Mon-Fri 10:00-16:00 Asia/Kolkata"
    ]
    later = forecast(State(NOW, queue=(waiting,)), Policy(), timedelta(days=1))
    assert (later.events[0].kind, later.events[0].at) == (
        "start", datetime(2026, 12, 4, 4, 30, tzinfo=UTC)  # Friday 10:00 IST
    )  # fmt: skip


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        ({"cooldown": "an hour"}, "cooldown",
         "expected a number and a unit (s, m, h, d, w), got 'an hour'"),
        ({"max_fleet": 0}, "max_fleet", "must be a whole number >= 1, got 0"),
        ({"max_per_service": True}, "max_per_service", "must be a whole number >= 1, got True"),
        ({"blackouts": [{"name": "w", "weekly": "Fri 16:00 - Mon 09:00", "tz": "Nowhere"}]},
         "blackouts[0].tz", "unknown time zone 'Nowhere'"),
        ({"cool_down": "1h"}, "cool_down",
         "unknown field (known: blackouts, cooldown, max_fleet, max_per_service)"),
    ],
)  # fmt: skip
def test_policy_errors_name_the_field_and_the_reason(
    data: dict[str, object], field: str, reason: str
) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_policy(data)
    assert (caught.value.field, caught.value.reason) == (field, reason)


def test_policy_parses_the_fis_rule() -> None:
    policy = parse_policy({"cooldown": "1h", "max_per_service": 1, "max_fleet": 10}, GRAPH)
    assert policy == Policy(timedelta(hours=1), 1, 10, GRAPH)


def test_queue_timeline_shows_two_concurrent_then_the_third_with_its_reason() -> None:
    first = exp("inj-a", "payments-api", "payments-api-2")
    second = exp("inj-b", "payments-api", "payments-api-2", submitted_at=NOW + timedelta(seconds=1))
    third = exp("inj-c", "search")
    lapsing = exp("inj-d", "payments-api", "payments-api-2", not_after=NOW + timedelta(minutes=10))
    office = parse_windows([{"weekdays": "Sat", "hours": "10:00-11:00", "tz": "UTC"}])
    weekend = exp("inj-e", "catalog", windows=office)
    state = State(NOW, queue=(first, second, third, lapsing, weekend))
    future = forecast(state, Policy(), timedelta(hours=2))
    table = [
        (r.experiment, r.status, r.start and r.start - NOW, r.reason)
        for r in rows(state, Policy(), future)
    ]
    assert table == [
        ("inj-a", "starts", timedelta(0), ""),
        ("inj-c", "starts", timedelta(0), ""),
        ("inj-b", "starts", timedelta(minutes=30),
         "waits for inj-a (same sidecar payments-api-2, same scope)"),
        ("inj-d", "expires", None, "not started by its deadline 2026-12-03 13:15 UTC"),
        ("inj-e", "waits", None, "outside window Sat 10:00-11:00 UTC"),
    ]  # fmt: skip
