"""Latency: a fixed delay, or a distribution given by its p50 and p99."""

from __future__ import annotations

import math
from dataclasses import dataclass

from faultplane.faults.kind import FieldValues, Problems
from faultplane.faults.slots import SlotConfig, delay_slot
from faultplane.model.spec import FaultSpec

MAX_DELAY_MS = 10 * 60 * 1000
MIN_DELAY_MS = 1.0  # Envoy rejects a zero delay; below a millisecond is noise anyway
# Share of requests that get the tail delay of a p50/p99 distribution. Above 1 % so the
# 99th percentile lands in the tail, low enough that the median stays at p50.
TAIL_SHARE = 0.04


@dataclass(frozen=True)
class Latency:
    """A delay: fixed (p99 None), or a distribution whose p50 and p99 are given."""

    p50_ms: float
    p99_ms: float | None = None


class LatencyKind:
    name = "latency"
    field_names = frozenset({"fixed_ms", "p50_ms", "p99_ms"})
    spec_type = Latency

    def parse(self, fields: FieldValues, path: str, problems: Problems) -> Latency | None:
        fixed, p50, p99 = (fields.get(name) for name in ("fixed_ms", "p50_ms", "p99_ms"))
        if fixed is not None and (p50 is not None or p99 is not None):
            problems.add(
                f"{path}.fixed_ms", "give fixed_ms, or p50_ms (and optionally p99_ms), not both"
            )
            return None
        if fixed is None and p50 is None:
            problems.add(f"{path}.p50_ms", "a latency fault needs fixed_ms or p50_ms")
            return None
        for name, value in (("fixed_ms", fixed), ("p50_ms", p50), ("p99_ms", p99)):
            if value is not None and not (
                math.isfinite(value) and MIN_DELAY_MS <= value <= MAX_DELAY_MS
            ):
                problems.add(
                    f"{path}.{name}", f"must be between {MIN_DELAY_MS:g} and {MAX_DELAY_MS} ms"
                )
                return None
        if fixed is not None:
            return Latency(fixed)
        assert p50 is not None
        if p99 is not None and p99 < p50 + MIN_DELAY_MS:
            problems.add(
                f"{path}.p99_ms", f"must be at least {MIN_DELAY_MS:g} ms above p50_ms ({p50:g})"
            )
            return None
        return Latency(p50, p99)

    def render(self, injection_id: str, fault: FaultSpec) -> list[SlotConfig]:
        """One slot for the p50 delay; a distribution adds a second for the tail, whose
        delay adds to the first so that the slowest requests take p99."""
        latency = fault.kind
        assert isinstance(latency, Latency)
        slots = [delay_slot(injection_id, 0, latency.p50_ms, fault.percentage, fault)]
        if latency.p99_ms is not None:
            tail_ms = latency.p99_ms - latency.p50_ms
            slots.append(delay_slot(injection_id, 1, tail_ms, fault.percentage * TAIL_SHARE, fault))
        return slots

    def describe(self, spec: Latency) -> str:
        if spec.p99_ms is None:
            return f"latency {spec.p50_ms:g}ms"
        return f"latency p50 {spec.p50_ms:g}ms p99 {spec.p99_ms:g}ms"


LATENCY = LatencyKind()
