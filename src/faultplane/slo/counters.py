"""Envoy request counters and their deltas over a window: the arithmetic of the envoy source.

One sample is what one sidecar's `/stats/prometheus` said about one listener's HCM at one
moment. An SLO value over a window is computed from the difference between the newest
sample and the one a window earlier, summed over a group of sidecars.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from faultplane.slo.catalogue import SloDef

_PREFIX_LABEL = "envoy_http_conn_manager_prefix"


@dataclass(frozen=True)
class Counters:
    completed: float = 0.0
    errors: float = 0.0  # responses with a 5xx status
    # Cumulative request-time histogram: (upper bound in ms, count), ending with +Inf.
    buckets: tuple[tuple[float, float], ...] = ()

    def minus(self, earlier: Counters) -> Counters:
        """The increase since `earlier`; a counter that went down was reset (Envoy restart)."""
        if self.completed < earlier.completed or self.errors < earlier.errors:
            return self
        old = dict(earlier.buckets)
        return Counters(
            self.completed - earlier.completed,
            self.errors - earlier.errors,
            tuple((le, max(0.0, count - old.get(le, 0.0))) for le, count in self.buckets),
        )

    def plus(self, other: Counters) -> Counters:
        theirs = dict(other.buckets)
        mine = dict(self.buckets)
        bounds = sorted(set(mine) | set(theirs))
        return Counters(
            self.completed + other.completed,
            self.errors + other.errors,
            tuple((le, mine.get(le, 0.0) + theirs.get(le, 0.0)) for le in bounds),
        )


def parse_listener_stats(text: str) -> dict[str, Counters]:
    """Counters per HCM stat prefix (ingress, egress) from Envoy's Prometheus output."""
    completed: dict[str, float] = {}
    errors: dict[str, float] = {}
    buckets: dict[str, list[tuple[float, float]]] = {}
    for family in text_string_to_metric_families(text):
        # Match on the family: the parser names counter samples `<family>_total`.
        for sample in family.samples:
            prefix = sample.labels.get(_PREFIX_LABEL)
            if prefix is None:
                continue
            if family.name == "envoy_http_downstream_rq_completed":
                completed[prefix] = sample.value
            elif family.name == "envoy_http_downstream_rq_xx":
                if sample.labels.get("envoy_response_code_class") == "5":
                    errors[prefix] = sample.value
            elif sample.name == "envoy_http_downstream_rq_time_bucket":
                le = float(sample.labels["le"])
                buckets.setdefault(prefix, []).append((le, sample.value))
    return {
        prefix: Counters(
            completed.get(prefix, 0.0),
            errors.get(prefix, 0.0),
            tuple(sorted(buckets.get(prefix, []))),
        )
        for prefix in set(completed) | set(buckets)
    }


def slo_value(slo: SloDef, increase: Counters) -> float | None:
    """The SLO's share of good requests in `increase`; None when there were no requests."""
    if slo.kind == "success_ratio":
        if increase.completed <= 0:
            return None
        return 1.0 - increase.errors / increase.completed
    assert slo.threshold_ms is not None
    return share_within(increase.buckets, slo.threshold_ms)


def share_within(buckets: tuple[tuple[float, float], ...], threshold_ms: float) -> float | None:
    """Share of a cumulative histogram at or below the threshold, interpolating linearly
    inside the bucket that holds it (as PromQL's histogram_quantile does)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    lower_le, lower_count = 0.0, 0.0
    for le, count in buckets:
        if threshold_ms <= le:
            if math.isinf(le):
                return lower_count / total
            fraction = (threshold_ms - lower_le) / (le - lower_le) if le > lower_le else 1.0
            return (lower_count + fraction * (count - lower_count)) / total
        lower_le, lower_count = le, count
    return 1.0


class History:
    """The recent samples of one sidecar listener, enough to cover the longest window."""

    def __init__(self, keep_seconds: float) -> None:
        self._keep = keep_seconds
        self._samples: deque[tuple[float, Counters]] = deque()

    def add(self, at: float, counters: Counters) -> None:
        self._samples.append((at, counters))
        while len(self._samples) > 2 and self._samples[1][0] <= at - self._keep:
            self._samples.popleft()

    @property
    def newest_at(self) -> float | None:
        """When the newest sample was taken, None before the first."""
        return self._samples[-1][0] if self._samples else None

    def increase(self, window_seconds: float) -> tuple[Counters, float] | None:
        """(increase over the window, seconds actually covered), or None with < 2 samples.

        Uses the newest sample at least a window old, so a full window is covered once the
        history is long enough; before that, everything since the first sample.
        """
        if len(self._samples) < 2:
            return None
        newest_at, newest = self._samples[-1]
        start_at, start = self._samples[0]
        for at, counters in self._samples:
            if at > newest_at - window_seconds:
                break
            start_at, start = at, counters
        return newest.minus(start), newest_at - start_at


def total(increases: Iterable[Counters]) -> Counters:
    result = Counters()
    for increase in increases:
        result = result.plus(increase)
    return result
