"""A fault kind defined outside faultplane: the exercise that adding a kind is one module
plus one registration line (`register(FIXED_DELAY)`, done by tests/test_fault_kinds.py).

`fixed_delay` delays every faulted request by `fixed_ms`, in one slot. It uses the flat
form (`{"type": "fixed_delay", "fixed_ms": 250}`), so it needs no proto change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from faultplane.faults.kind import FieldValues, Problems
from faultplane.faults.slots import SlotConfig, delay_slot
from faultplane.model.spec import FaultSpec

MAX_MS = 60_000


@dataclass(frozen=True)
class FixedDelay:
    ms: float


class FixedDelayKind:
    name = "fixed_delay"
    field_names = frozenset({"fixed_ms"})
    spec_type = FixedDelay

    def parse(self, fields: FieldValues, path: str, problems: Problems) -> FixedDelay | None:
        ms = fields.get("fixed_ms")
        if ms is None or not (math.isfinite(ms) and 1 <= ms <= MAX_MS):
            problems.add(
                f"{path}.fixed_ms", f"a fixed_delay fault needs fixed_ms from 1 to {MAX_MS}"
            )
            return None
        return FixedDelay(ms)

    def render(self, injection_id: str, fault: FaultSpec) -> list[SlotConfig]:
        delay = fault.kind
        assert isinstance(delay, FixedDelay)
        return [delay_slot(injection_id, 0, delay.ms, fault.percentage, fault)]

    def describe(self, spec: FixedDelay) -> str:
        return f"fixed_delay {spec.ms:g}ms"


FIXED_DELAY = FixedDelayKind()
