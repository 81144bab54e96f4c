"""Nearest-rank quantiles: the one definition the baseline, the demo, the load generator
and the benchmarks share.

The value at index floor(q * n) of the sorted values (the upper nearest rank): a value
that was really observed, never an interpolation, and with fewer than 100 samples the
99th percentile is the worst one: the conservative reading for an SLO.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def quantile(ordered: Sequence[float], q: float, digits: int | None = 3) -> float | None:
    """The q-quantile (q in 0..1) of already sorted values, None when there are none;
    rounded to `digits` decimals (None: as observed)."""
    if not ordered:
        return None
    value = ordered[min(len(ordered) - 1, math.floor(q * len(ordered)))]
    return value if digits is None else round(value, digits)
