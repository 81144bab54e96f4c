"""The refusal limiter on its own: a pure class, driven by an explicit clock."""

from __future__ import annotations

import pytest

from faultplane.api.ratelimit import RefusalLimiter


def test_the_first_refusals_pass_then_the_rest_are_limited_with_a_retry_hint() -> None:
    limiter = RefusalLimiter(limit=3, window=60.0)

    passed = [limiter.refuse("peer 10.0.0.7", "CreateInjection", 100.0 + i) for i in range(3)]
    limited = limiter.refuse("peer 10.0.0.7", "CreateInjection", 110.0)

    assert [d.limited for d in passed] == [False, False, False]
    assert limited.limited
    assert limited.retry_after == pytest.approx(50.0)  # the window began at 100, ends at 160
    assert limited.retry_after_seconds == 50


def test_the_retry_hint_is_never_zero_seconds() -> None:
    limiter = RefusalLimiter(limit=1, window=10.0)
    limiter.refuse("k", "M", 0.0)

    assert limiter.refuse("k", "M", 9.99).retry_after_seconds == 1


def test_callers_are_limited_apart() -> None:
    limiter = RefusalLimiter(limit=1, window=60.0)
    limiter.refuse("peer a", "M", 0.0)

    assert limiter.refuse("peer a", "M", 1.0).limited
    assert not limiter.refuse("peer b", "M", 1.0).limited
    assert not limiter.refuse("principal a", "M", 1.0).limited


def test_one_summary_per_window_counts_what_was_suppressed() -> None:
    limiter = RefusalLimiter(limit=2, window=10.0)
    for i in range(7):
        limiter.refuse("peer x", "CreateInjection" if i % 2 else "ListInjections", 1.0 + i)

    assert limiter.due(10.9) == []  # the window (1 .. 11) is still open
    [summary] = limiter.due(11.0)
    assert summary.caller == "peer x"
    assert (summary.started, summary.ended) == (1.0, 11.0)
    assert (summary.refused, summary.suppressed) == (2, 5)
    assert summary.methods == {"CreateInjection": 2, "ListInjections": 3}  # calls 3 to 7
    assert limiter.due(100.0) == []  # reported once

    # A new window starts afresh: refusals are let through (and audited) again.
    assert not limiter.refuse("peer x", "CreateInjection", 12.0).limited


def test_a_window_without_suppression_ends_silently() -> None:
    limiter = RefusalLimiter(limit=5, window=10.0)
    for i in range(5):
        limiter.refuse("peer x", "M", float(i))

    assert limiter.due(100.0) == []
    assert len(limiter) == 0


def test_memory_is_bounded_and_an_evicted_window_is_still_reported() -> None:
    limiter = RefusalLimiter(limit=1, window=1000.0, max_callers=3)
    limiter.refuse("first", "M", 0.0)
    limiter.refuse("first", "M", 0.5)  # suppressed
    for n in range(100):
        limiter.refuse(f"peer {n}", "M", 1.0 + n)

    assert len(limiter) == 3
    summaries = limiter.due(200.0)
    assert [(s.caller, s.suppressed) for s in summaries] == [("first", 1)]
    assert summaries[0].ended == 3.0  # closed early, when "peer 2" needed its room


def test_flush_reports_open_windows_at_shutdown() -> None:
    limiter = RefusalLimiter(limit=1, window=60.0)
    limiter.refuse("peer x", "M", 0.0)
    limiter.refuse("peer x", "M", 1.0)
    limiter.refuse("peer y", "M", 2.0)  # never over its limit: nothing to report

    [summary] = limiter.flush(5.0)

    assert (summary.caller, summary.suppressed, summary.ended) == ("peer x", 1, 5.0)
    assert len(limiter) == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"limit": 0}, "limit"), ({"window": 0.0}, "window"),
     ({"window": float("nan")}, "window"), ({"max_callers": 0}, "max_callers")],
)  # fmt: skip
def test_meaningless_settings_are_refused(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}: "):
        RefusalLimiter(**kwargs)
