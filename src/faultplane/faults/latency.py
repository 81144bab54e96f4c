"""Latency: a fixed delay, or a distribution given by its p50 and p99, or either with
uniform jitter.

Envoy's fault filter delays by a fixed amount per slot, so spread is built from chained
slots, each adding its delay to the requests it picks (independently). Jitter of ±J
around D is D - J in the first slot plus JITTER_BITS slots adding 2J/3 and 4J/3, each to
half the faulted share: the two fair, independent "bits" give four equally likely delays,
D - J, D - J/3, D + J/3, D + J, a uniform spread on a four-step grid. It takes
1 + JITTER_BITS slots; a sidecar with fewer is refused at admission (no free slot).
When the fault's percentage is below 100, the jitter slots pick independently of the
first, so a few unfaulted requests also get a jitter delay alone (a share of
percentage/2 each).
"""

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
# Independent fair slots that make jitter; 2**JITTER_BITS equally likely delays.
JITTER_BITS = 2
MIN_JITTER_MS = 2.0  # so that the smallest jitter step (2J/3) is at least MIN_DELAY_MS


@dataclass(frozen=True)
class Latency:
    """A delay: fixed (p99 None), or a distribution whose p50 and p99 are given; or
    fixed/p50 with uniform jitter of ±jitter_ms (never with p99: one shape of spread)."""

    p50_ms: float
    p99_ms: float | None = None
    jitter_ms: float | None = None


class LatencyKind:
    name = "latency"
    field_names = frozenset({"fixed_ms", "p50_ms", "p99_ms", "jitter_ms"})
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
        jitter = fields.get("jitter_ms")
        if jitter is not None:
            return self._jittered(fixed if fixed is not None else p50, p99, jitter, path, problems)
        if fixed is not None:
            return Latency(fixed)
        assert p50 is not None
        if p99 is not None and p99 < p50 + MIN_DELAY_MS:
            problems.add(
                f"{path}.p99_ms", f"must be at least {MIN_DELAY_MS:g} ms above p50_ms ({p50:g})"
            )
            return None
        return Latency(p50, p99)

    def _jittered(
        self, center: float | None, p99: float | None, jitter: float, path: str, problems: Problems
    ) -> Latency | None:
        assert center is not None
        if p99 is not None:
            problems.add(f"{path}.jitter_ms", "give jitter_ms or p99_ms, not both")
        elif not (math.isfinite(jitter) and MIN_JITTER_MS <= jitter <= center - MIN_DELAY_MS):
            problems.add(
                f"{path}.jitter_ms",
                f"must be between {MIN_JITTER_MS:g} ms and the delay less {MIN_DELAY_MS:g} ms "
                f"({center - MIN_DELAY_MS:g}): the shortest delay is the delay less jitter_ms",
            )
        else:
            return Latency(center, jitter_ms=jitter)
        return None

    def render(self, injection_id: str, fault: FaultSpec) -> list[SlotConfig]:
        """One slot for the p50 delay; a distribution adds a second for the tail, whose
        delay adds to the first so that the slowest requests take p99."""
        latency = fault.kind
        assert isinstance(latency, Latency)
        if latency.jitter_ms is not None:
            return self._jitter_slots(injection_id, fault, latency.p50_ms, latency.jitter_ms)
        slots = [delay_slot(injection_id, 0, latency.p50_ms, fault.percentage, fault)]
        if latency.p99_ms is not None:
            tail_ms = latency.p99_ms - latency.p50_ms
            slots.append(delay_slot(injection_id, 1, tail_ms, fault.percentage * TAIL_SHARE, fault))
        return slots

    def _jitter_slots(
        self, injection_id: str, fault: FaultSpec, center: float, jitter: float
    ) -> list[SlotConfig]:
        """The base D - J, then a slot per bit adding 2J * 2**bit / (2**JITTER_BITS - 1)
        to half the faulted share (see the module's docstring)."""
        slots = [delay_slot(injection_id, 0, center - jitter, fault.percentage, fault)]
        levels = 2**JITTER_BITS - 1
        for bit in range(JITTER_BITS):
            step = 2 * jitter * 2**bit / levels
            slots.append(delay_slot(injection_id, 1 + bit, step, fault.percentage / 2, fault))
        return slots

    def describe(self, spec: Latency) -> str:
        if spec.jitter_ms is not None:
            return f"latency {spec.p50_ms:g}ms ±{spec.jitter_ms:g}ms"
        if spec.p99_ms is None:
            return f"latency {spec.p50_ms:g}ms"
        return f"latency p50 {spec.p50_ms:g}ms p99 {spec.p99_ms:g}ms"


LATENCY = LatencyKind()
