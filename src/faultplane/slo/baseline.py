"""What "fine" looks like: each SLO's recent history and its normal noise.

Teams must know their steady state before they may inject: an injection is refused while
there is too little history, or when its `min` sits inside the SLO's normal noise (above
the observed p5), where the guard would abort on background noise alone.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from faultplane.slo.quantile import quantile
from faultplane.slo.sources import Reading


@dataclass(frozen=True)
class BaselineStats:
    slo: str
    samples: int
    seconds_covered: float
    minimum: float | None
    p1: float | None
    p5: float | None
    median: float | None
    p95: float | None
    unreadable: int


def baseline_stats(slo: str, readings: Iterable[Reading]) -> BaselineStats:
    readings = list(readings)
    values = sorted(r.value for r in readings if r.readable and r.value is not None)
    times = [r.at for r in readings if r.readable]
    covered = max(times) - min(times) if len(times) > 1 else 0.0

    def q(fraction: float) -> float | None:
        return quantile(values, fraction, digits=None)

    return BaselineStats(
        slo=slo,
        samples=len(values),
        seconds_covered=covered,
        minimum=values[0] if values else None,
        p1=q(0.01),
        p5=q(0.05),
        median=q(0.50),
        p95=q(0.95),
        unreadable=len(readings) - len(values),
    )


def preflight_problem(stats: BaselineStats, minimum: float, min_seconds: float) -> str | None:
    """Why an injection guarded by `minimum` may not start yet, or None."""
    if stats.seconds_covered < min_seconds:
        return (
            f"steady_state.slo: only {stats.seconds_covered:.0f}s of baseline for {stats.slo}, "
            f"{min_seconds:g}s required before injecting"
        )
    if stats.p5 is None:
        if min_seconds <= 0:
            return None  # no history required, and none to compare `min` with
        return (
            f"steady_state.slo: {stats.slo} has {stats.seconds_covered:.0f}s of baseline but "
            "not one readable sample: its normal value is unknown"
        )
    if minimum > stats.p5:
        return (
            f"steady_state.min: {minimum:g} is inside {stats.slo}'s normal noise: its p5 over "
            f"the last {stats.seconds_covered:.0f}s is {stats.p5:.4f}, so the guard would abort "
            "on background noise; set min at or below the p5"
        )
    return None


class BaselineBook:
    """Rolling in-memory history of every catalogued SLO, sampled by the guard each tick."""

    def __init__(self, keep_seconds: float) -> None:
        self.keep_seconds = keep_seconds
        self._readings: dict[str, deque[Reading]] = {}

    def add(self, slo: str, reading: Reading) -> None:
        history = self._readings.setdefault(slo, deque())
        history.append(reading)
        while history and history[0].at < reading.at - self.keep_seconds:
            history.popleft()

    def readings(self, slo: str, window_seconds: float, now: float) -> list[Reading]:
        return [r for r in self._readings.get(slo, ()) if r.at >= now - window_seconds]
