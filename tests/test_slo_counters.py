"""Envoy counter arithmetic (parsing, deltas, SLO values, windows) and the PromQL twin."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pytest

from faultplane.slo.catalogue import SloDef
from faultplane.slo.counters import (
    Counters,
    History,
    parse_listener_stats,
    share_within,
    slo_value,
    total,
)
from faultplane.slo.sources import ENVOY_BUCKETS, promql

# Envoy's request-time bucket labels, as `/stats/prometheus` prints them.
BOUND_LABELS = (
    "0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000",
    "30000", "60000", "300000", "600000", "1800000", "3600000",
)  # fmt: skip


@dataclass(frozen=True)
class Traffic:
    """One HCM's cumulative counters: requests per response code class and their times."""

    classes: Mapping[str, int]  # "2" -> count of 2xx, "5" -> count of 5xx...
    times_ms: Sequence[float] = ()

    @property
    def completed(self) -> int:
        return sum(self.classes.values())


def envoy_stats(listeners: Mapping[str, Traffic]) -> str:
    """`/stats/prometheus?usedonly&filter=...` text in the shape Envoy 1.40 prints it
    (captured from a real Envoy: one TYPE line per family, prefixes within)."""
    lines: list[str] = []

    def family(name: str, kind: str, rows: list[str]) -> None:
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(rows)

    def pfx(prefix: str) -> str:
        return f'envoy_http_conn_manager_prefix="{prefix}"'

    family(
        "envoy_http_downstream_rq_completed",
        "counter",
        [
            f"envoy_http_downstream_rq_completed{{{pfx(p)}}} {t.completed}"
            for p, t in listeners.items()
        ],
    )
    family(
        "envoy_http_downstream_rq_http1_total",
        "counter",
        [
            f"envoy_http_downstream_rq_http1_total{{{pfx(p)}}} {t.completed}"
            for p, t in listeners.items()
        ],
    )
    family(
        "envoy_http_downstream_rq_total",
        "counter",
        [f"envoy_http_downstream_rq_total{{{pfx(p)}}} {t.completed}" for p, t in listeners.items()],
    )
    family(
        "envoy_http_downstream_rq_xx",
        "counter",
        [
            f'envoy_http_downstream_rq_xx{{envoy_response_code_class="{cls}",{pfx(p)}}} {n}'
            for p, t in listeners.items()
            for cls, n in sorted(t.classes.items())
        ],
    )
    family(
        "envoy_http_downstream_rq_active",
        "gauge",
        [f"envoy_http_downstream_rq_active{{{pfx(p)}}} 0" for p in listeners],
    )
    rows = []
    for p, t in listeners.items():
        for label in (*BOUND_LABELS, "+Inf"):
            le = float(label)
            count = sum(1 for ms in t.times_ms if ms <= le)
            rows.append(f'envoy_http_downstream_rq_time_bucket{{{pfx(p)},le="{label}"}} {count}')
        rows.append(f"envoy_http_downstream_rq_time_sum{{{pfx(p)}}} {sum(t.times_ms):g}")
        rows.append(f"envoy_http_downstream_rq_time_count{{{pfx(p)}}} {len(t.times_ms)}")
    family("envoy_http_downstream_rq_time", "histogram", rows)
    # Something without the HCM prefix label, which must be ignored.
    family("envoy_server_live", "gauge", ["envoy_server_live{} 1"])
    return "\n".join(lines) + "\n"


INGRESS = Traffic(
    {"2": 95, "4": 3, "5": 2},
    times_ms=[0.3] * 10 + [3] * 40 + [80] * 30 + [200] * 10 + [400] * 8 + [2000] * 2,
)
EGRESS = Traffic({"2": 40}, times_ms=[7] * 40)


def test_envoy_stats_fixture_has_envoys_shape() -> None:
    text = envoy_stats({"ingress": INGRESS})
    assert (
        'envoy_http_downstream_rq_xx{envoy_response_code_class="5",'
        'envoy_http_conn_manager_prefix="ingress"} 2'
    ) in text
    assert (
        'envoy_http_downstream_rq_time_bucket{envoy_http_conn_manager_prefix="ingress",le="0.5"} 10'
        in text
    )
    assert 'le="3600000"} 100' in text and 'le="+Inf"} 100' in text
    # The PromQL side uses the same bounds.
    assert tuple(float(b) for b in BOUND_LABELS) == tuple(float(b) for b in ENVOY_BUCKETS)


# --- parsing -----------------------------------------------------------------------------


def test_parse_listener_stats_per_prefix() -> None:
    parsed = parse_listener_stats(envoy_stats({"ingress": INGRESS, "egress": EGRESS}))
    assert set(parsed) == {"ingress", "egress"}

    ingress = parsed["ingress"]
    assert ingress.completed == 100
    assert ingress.errors == 2  # only 5xx; the 4xx are not errors
    bounds = [le for le, _ in ingress.buckets]
    assert bounds == [float(b) for b in BOUND_LABELS] + [math.inf]
    counts = dict(ingress.buckets)
    assert counts[0.5] == 10
    assert counts[5.0] == 50
    assert counts[100.0] == 80
    assert counts[250.0] == 90
    assert counts[500.0] == 98
    assert counts[1000.0] == 98
    assert counts[2500.0] == 100
    assert counts[math.inf] == 100

    egress = parsed["egress"]
    assert (egress.completed, egress.errors) == (40, 0)
    assert dict(egress.buckets)[5.0] == 0
    assert dict(egress.buckets)[10.0] == 40


def test_parse_ignores_text_without_hcm_stats() -> None:
    assert parse_listener_stats("# TYPE envoy_server_live gauge\nenvoy_server_live{} 1\n") == {}
    assert parse_listener_stats("") == {}


# --- deltas ------------------------------------------------------------------------------


def _counters(completed: float, errors: float, *buckets: tuple[float, float]) -> Counters:
    return Counters(completed, errors, tuple(buckets))


def test_minus_over_two_samples() -> None:
    before = parse_listener_stats(envoy_stats({"ingress": INGRESS}))["ingress"]
    later_traffic = Traffic(
        {"2": 145, "4": 3, "5": 12},
        times_ms=list(INGRESS.times_ms) + [3] * 50 + [600] * 10,
    )
    after = parse_listener_stats(envoy_stats({"ingress": later_traffic}))["ingress"]
    increase = after.minus(before)
    assert (increase.completed, increase.errors) == (60, 10)
    counts = dict(increase.buckets)
    assert counts[1.0] == 0
    assert counts[5.0] == 50
    assert counts[500.0] == 50
    assert counts[1000.0] == 60
    assert counts[math.inf] == 60
    assert [le for le, _ in increase.buckets] == [le for le, _ in after.buckets]


def test_minus_treats_a_lower_counter_as_a_reset() -> None:
    before = _counters(1000, 50, (100.0, 900), (math.inf, 1000))
    restarted = _counters(30, 1, (100.0, 25), (math.inf, 30))
    # Everything since the restart is the increase.
    assert restarted.minus(before) == restarted
    errors_reset = _counters(1200, 0, (100.0, 1100), (math.inf, 1200))
    assert errors_reset.minus(before) == errors_reset


def test_minus_never_gives_negative_bucket_counts() -> None:
    before = _counters(10, 0, (100.0, 8), (math.inf, 10))
    after = _counters(12, 0, (100.0, 7), (math.inf, 12))
    assert dict(after.minus(before).buckets) == {100.0: 0.0, math.inf: 2.0}


def test_plus_and_total_merge_buckets() -> None:
    a = _counters(10, 1, (100.0, 6), (math.inf, 10))
    b = _counters(5, 2, (50.0, 1), (100.0, 4), (math.inf, 5))
    assert a.plus(b) == _counters(15, 3, (50.0, 1), (100.0, 10), (math.inf, 15))
    assert total([a, b]) == a.plus(b)
    assert total([]) == Counters()


# --- SLO values --------------------------------------------------------------------------

SUCCESS = SloDef(name="ok", service="payments-api")
LATENCY = SloDef(name="fast", service="payments-api", kind="latency_under", threshold_ms=300)


def test_slo_value_success_ratio() -> None:
    assert slo_value(SUCCESS, _counters(200, 3)) == pytest.approx(0.985)
    assert slo_value(SUCCESS, _counters(200, 0)) == 1.0
    assert slo_value(SUCCESS, _counters(4, 4)) == 0.0


def test_slo_value_none_without_requests() -> None:
    assert slo_value(SUCCESS, Counters()) is None
    assert slo_value(LATENCY, Counters()) is None
    assert slo_value(LATENCY, _counters(0, 0, (250.0, 0), (math.inf, 0))) is None


def test_slo_value_latency_under_uses_the_histogram() -> None:
    increase = parse_listener_stats(envoy_stats({"ingress": INGRESS}))["ingress"]
    # 90 at or below 250 ms, 98 at or below 500 ms: 300 ms is 1/5 of the way.
    assert slo_value(LATENCY, increase) == pytest.approx((90 + 0.2 * 8) / 100)


BUCKETS = ((100.0, 40.0), (250.0, 70.0), (500.0, 90.0), (1000.0, 95.0), (math.inf, 100.0))


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        pytest.param(250, 0.70, id="exactly on a bound"),
        pytest.param(100, 0.40, id="exactly on the first bound"),
        pytest.param(300, (70 + 0.2 * 20) / 100, id="inside a bucket"),
        pytest.param(175, (40 + 0.5 * 30) / 100, id="middle of a bucket"),
        pytest.param(25, 0.25 * 40 / 100, id="below the first bound"),
        pytest.param(5000, 0.95, id="beyond the last finite bound"),
    ],
)
def test_share_within(threshold: float, expected: float) -> None:
    assert share_within(BUCKETS, threshold) == pytest.approx(expected)


def test_share_within_empty() -> None:
    assert share_within((), 300) is None
    assert share_within(((100.0, 0.0), (math.inf, 0.0)), 300) is None


# --- history windows ---------------------------------------------------------------------


def _steady(at: float) -> Counters:
    """10 requests a second, 1 of them failing, since t=0."""
    return _counters(10 * at, at)


def test_history_needs_two_samples() -> None:
    history = History(keep_seconds=60)
    assert history.increase(10) is None
    history.add(0.0, _steady(0))
    assert history.increase(10) is None
    history.add(1.0, _steady(1))
    assert history.increase(10) is not None


def test_history_partial_window_uses_first_sample() -> None:
    history = History(keep_seconds=60)
    for at in (100.0, 101.0, 102.5):
        history.add(at, _steady(at))
    result = history.increase(60)
    assert result is not None
    increase, covered = result
    assert covered == pytest.approx(2.5)
    assert (increase.completed, increase.errors) == pytest.approx((25.0, 2.5))


def test_history_full_window_uses_newest_sample_a_window_old() -> None:
    history = History(keep_seconds=60)
    for at in range(11):
        history.add(float(at), _steady(at))
    result = history.increase(3)
    assert result is not None
    increase, covered = result
    # Newest at 10; the newest sample at least 3 s old is at 7.
    assert covered == 3.0
    assert (increase.completed, increase.errors) == (30.0, 3.0)
    # A window that falls between samples stretches to the one just older.
    result = history.increase(2.5)
    assert result is not None
    assert result[1] == 3.0


def test_history_prunes_beyond_keep_seconds() -> None:
    history = History(keep_seconds=10)
    for at in range(0, 25, 5):  # 0, 5, 10, 15, 20
        history.add(float(at), _steady(at))
    result = history.increase(1000)
    assert result is not None
    increase, covered = result
    # Samples at 0 and 5 are gone; 10 (exactly keep_seconds old) remains as the start.
    assert covered == 10.0
    assert increase.completed == 100.0


def test_history_increase_across_an_envoy_restart() -> None:
    history = History(keep_seconds=60)
    history.add(0.0, _counters(5000, 10))
    history.add(1.0, _counters(5010, 10))
    history.add(2.0, _counters(7, 7))  # restarted: counters start again
    result = history.increase(60)
    assert result is not None
    assert (result[0].completed, result[0].errors) == (7, 7)
    assert slo_value(SUCCESS, result[0]) == 0.0


# --- PromQL ------------------------------------------------------------------------------


def test_promql_success_ratio() -> None:
    slo = SloDef(name="ok", service="payments-api", listener="egress", window_seconds=60)
    query = promql(slo, ["a", "b"])
    assert 'envoy_http_conn_manager_prefix="egress"' in query
    assert 'envoy_http_conn_manager_prefix="ingress"' not in query
    assert 'pod=~"a|b"' in query
    assert "[60s]" in query
    assert "or vector(0)" in query
    assert 'envoy_response_code_class="5"' in query
    assert query.startswith("1 - ")
    assert "envoy_http_downstream_rq_completed{" in query
    assert query.count("(") == query.count(")")


def test_promql_window_formatting() -> None:
    slo = SloDef(name="ok", service="payments-api", window_seconds=2.5)
    assert "[2.5s]" in promql(slo, ["a"])


def _latency_terms(query: str) -> tuple[list[str], list[str]]:
    les = re.findall(r'le="([^"]+)"', query)
    coefficients = re.findall(r"\+ ([0-9.e-]+) \*", query)
    return les, coefficients


def test_promql_latency_under_interpolates() -> None:
    slo = SloDef(name="fast", service="payments-api", kind="latency_under", threshold_ms=300)
    query = promql(slo, ["a", "b"])
    les, coefficients = _latency_terms(query)
    # 300 ms lies between the 250 and 500 buckets: 250 + 0.2 * (500 - 250), over +Inf.
    assert les == ["250", "500", "250", "+Inf"]
    assert coefficients == ["0.2"]
    assert 'pod=~"a|b"' in query and "[60s]" in query
    assert query.endswith('le="+Inf"}[60s]))')


def test_promql_latency_under_threshold_on_a_bound() -> None:
    slo = SloDef(name="fast", service="payments-api", kind="latency_under", threshold_ms=250)
    les, coefficients = _latency_terms(promql(slo, ["a"]))
    assert les == ["100", "250", "100", "+Inf"]
    assert coefficients == ["1"]


def test_promql_latency_under_below_first_bound() -> None:
    slo = SloDef(name="fast", service="payments-api", kind="latency_under", threshold_ms=0.3)
    query = promql(slo, ["a"])
    les, coefficients = _latency_terms(query)
    assert les == ["0.5", "+Inf"]
    assert coefficients == ["0.6"]
    assert "(0 + 0.6 * (" in query


def test_promql_latency_under_matches_envoy_source_beyond_last_bound() -> None:
    # share_within counts only what is known to be within: up to the last finite bound.
    slo = SloDef(name="slow", service="payments-api", kind="latency_under", threshold_ms=5e6)
    les, _ = _latency_terms(promql(slo, ["a"]))
    assert les == ["3600000", "+Inf"]


def test_promql_custom_query_substitution() -> None:
    slo = SloDef(
        name="custom",
        service="payments-api",
        source="prometheus",
        window_seconds=30,
        query='sum(rate(ok{pod=~"$pods"}[$window])) / sum(rate(all{pod=~"$pods"}[$window]))',
    )
    assert promql(slo, ["p-1", "p-2"]) == (
        'sum(rate(ok{pod=~"p-1|p-2"}[30s])) / sum(rate(all{pod=~"p-1|p-2"}[30s]))'
    )


_BUCKET_TERM = re.compile(
    r'sum\(increase\(envoy_http_downstream_rq_time_bucket\{[^}]*le="([^"]+)"\}\[[^\]]+\]\)\)'
)


@pytest.mark.parametrize("threshold", [0.3, 0.5, 3, 250, 300, 750, 3600000, 5e6])
def test_promql_latency_agrees_with_envoy_source(threshold: float) -> None:
    """Both sources compute the same share from the same histogram increase."""
    # Two requests took longer than the last finite bound (an hour).
    slow = Traffic({"2": 97, "4": 3, "5": 2}, times_ms=[*INGRESS.times_ms, 4e6, 4e6])
    increase = parse_listener_stats(envoy_stats({"ingress": slow}))["ingress"]
    assert dict(increase.buckets)[math.inf] == 102
    counts = dict(increase.buckets)
    slo = SloDef(name="fast", service="payments-api", kind="latency_under", threshold_ms=threshold)
    query = promql(slo, ["a"])
    arithmetic = _BUCKET_TERM.sub(lambda m: repr(counts[float(m[1])]), query)
    assert re.fullmatch(r"[0-9.e+\-*/() ]+", arithmetic), arithmetic
    assert eval(arithmetic) == pytest.approx(share_within(increase.buckets, threshold))
