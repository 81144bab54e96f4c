"""Baselines: an SLO's normal noise, and the preflight refusals it justifies."""

from __future__ import annotations

import pytest

from faultplane.slo.baseline import BaselineBook, BaselineStats, baseline_stats, preflight_problem
from faultplane.slo.sources import Reading


def _stats(**changes: object) -> BaselineStats:
    fields: dict[str, object] = {
        "slo": "X",
        "samples": 300,
        "seconds_covered": 300.0,
        "minimum": 0.97,
        "p1": 0.98,
        "p5": 0.99,
        "median": 0.998,
        "p95": 1.0,
        "unreadable": 0,
    }
    fields.update(changes)
    return BaselineStats(**fields)  # type: ignore[arg-type]


def test_baseline_stats_quantiles() -> None:
    # 100 readable values 0.900, 0.901, ... 0.999, one a second, given out of order.
    values = [0.900 + i / 1000 for i in range(100)]
    readings = [Reading(v, at=1000.0 + i) for i, v in enumerate(reversed(values))]
    stats = baseline_stats("pay-ok", readings)
    assert stats.slo == "pay-ok"
    assert stats.samples == 100
    assert stats.unreadable == 0
    assert stats.seconds_covered == 99.0
    assert stats.minimum == pytest.approx(0.900)
    assert stats.p1 == pytest.approx(0.901)
    assert stats.p5 == pytest.approx(0.905)
    assert stats.median == pytest.approx(0.950)
    assert stats.p95 == pytest.approx(0.995)


def test_baseline_stats_counts_unreadable_and_ignores_their_times() -> None:
    readings = [
        Reading(None, "boom", at=0.0),
        Reading(0.99, at=10.0),
        Reading(0.5, "partial", at=12.0),  # a value with an error is not readable
        Reading(0.98, at=20.0),
        Reading(None, "boom", at=100.0),
    ]
    stats = baseline_stats("X", readings)
    assert stats.samples == 2
    assert stats.unreadable == 3
    assert stats.seconds_covered == 10.0
    assert stats.minimum == 0.98
    assert stats.median == 0.99


def test_baseline_stats_small_and_empty() -> None:
    one = baseline_stats("X", [Reading(0.97, at=5.0)])
    assert (one.samples, one.seconds_covered, one.minimum, one.p5, one.p95) == (
        1,
        0.0,
        0.97,
        0.97,
        0.97,
    )
    empty = baseline_stats("X", [Reading(None, "down", at=1.0)])
    assert (empty.samples, empty.unreadable, empty.seconds_covered) == (0, 1, 0.0)
    assert empty.minimum is None and empty.p1 is None and empty.p5 is None
    assert empty.median is None and empty.p95 is None


def test_preflight_too_little_history() -> None:
    problem = preflight_problem(_stats(seconds_covered=12.4), minimum=0.9, min_seconds=300)
    assert problem is not None
    assert "only 12s of baseline for X, 300s required" in problem
    assert problem.startswith("steady_state.slo:")


def test_preflight_no_readable_history() -> None:
    stats = baseline_stats("X", [Reading(None, "down", at=float(t)) for t in range(400)])
    problem = preflight_problem(stats, minimum=0.9, min_seconds=300)
    assert problem is not None
    assert "only 0s of baseline for X, 300s required" in problem


def test_preflight_min_inside_the_noise() -> None:
    problem = preflight_problem(_stats(p5=0.99), minimum=0.995, min_seconds=300)
    assert problem is not None
    assert problem.startswith("steady_state.min:")
    assert "0.995" in problem
    assert "0.9900" in problem
    assert "X" in problem and "300s" in problem


@pytest.mark.parametrize("minimum", [0.99, 0.95, 0.0])
def test_preflight_ok_at_or_below_p5(minimum: float) -> None:
    assert preflight_problem(_stats(p5=0.99), minimum=minimum, min_seconds=300) is None


def test_preflight_exact_history_is_enough() -> None:
    assert preflight_problem(_stats(seconds_covered=300.0), minimum=0.9, min_seconds=300) is None
    assert preflight_problem(_stats(seconds_covered=299.0), minimum=0.9, min_seconds=300)


def test_baseline_book_keeps_only_keep_seconds() -> None:
    book = BaselineBook(keep_seconds=10)
    for t in range(21):
        book.add("pay-ok", Reading(0.99, at=float(t)))
        book.add("fraud-ok", Reading(0.5, at=float(t)))
    kept = book.readings("pay-ok", window_seconds=1000, now=20.0)
    assert [r.at for r in kept] == [float(t) for t in range(10, 21)]
    assert all(r.value == 0.99 for r in kept)


def test_baseline_book_window_filters() -> None:
    book = BaselineBook(keep_seconds=60)
    for t in range(30):
        book.add("pay-ok", Reading(t / 100, at=100.0 + t))
    recent = book.readings("pay-ok", window_seconds=5, now=129.0)
    assert [r.at for r in recent] == [124.0, 125.0, 126.0, 127.0, 128.0, 129.0]
    # `now` is the reference, not the newest reading.
    assert book.readings("pay-ok", window_seconds=5, now=200.0) == []
    assert book.readings("unknown", window_seconds=5, now=129.0) == []
    # The window's readings feed baseline_stats directly.
    stats = baseline_stats("pay-ok", book.readings("pay-ok", 60, now=129.0))
    assert stats.samples == 30 and stats.seconds_covered == 29.0
