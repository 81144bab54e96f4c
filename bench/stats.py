"""Figures (p50/p99/max over repeated runs), goals and whether a figure meets its goal."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from faultplane.slo.quantile import quantile


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, q in 0..100 (NaN when there are no values)."""
    value = quantile(sorted(values), q / 100, digits=None)
    return math.nan if value is None else value


@dataclass(frozen=True)
class Goal:
    """`stat op value`, e.g. p99 <= 50 (in the figure's unit)."""

    stat: str  # p50 | p99 | max
    op: str  # <= | < | >=
    value: float
    text: str = ""

    def met(self, figure: Figure) -> bool | None:
        actual = figure.stat(self.stat)
        if math.isnan(actual):
            return None
        if self.op == ">=":
            return actual >= self.value
        return actual <= self.value if self.op == "<=" else actual < self.value

    def describe(self, unit: str) -> str:
        return self.text or f"{self.stat} {self.op} {self.value:g} {unit}"


@dataclass
class Figure:
    name: str
    unit: str
    samples: list[float] = field(default_factory=list)
    goal: Goal | None = None
    note: str = ""

    def stat(self, name: str) -> float:
        if name == "max":
            return max(self.samples) if self.samples else math.nan
        if name == "mean":
            return sum(self.samples) / len(self.samples) if self.samples else math.nan
        return percentile(self.samples, float(name.lstrip("p")))

    def met(self) -> bool | None:
        return None if self.goal is None else self.goal.met(self)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "unit": self.unit,
            "n": len(self.samples),
            "p50": _round(self.stat("p50")),
            "p99": _round(self.stat("p99")),
            "max": _round(self.stat("max")),
            "samples": [_round(v) for v in self.samples],
        }
        if self.goal is not None:
            out["goal"] = self.goal.describe(self.unit)
            out["met"] = self.met()
        if self.note:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class Ratio:
    """A comparison: `numerator / denominator` of two named quantities."""

    name: str
    numerator: str
    denominator: str
    value: float
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "numerator": self.numerator,
            "denominator": self.denominator,
            "value": _round(self.value),
            "note": self.note,
        }


def _round(value: float) -> float | None:
    if math.isnan(value) or math.isinf(value):
        return None
    return round(value, 3 if abs(value) < 100 else 1)
