"""Nearest-rank quantiles, the way the demo and the load generator report latencies."""

from __future__ import annotations

from collections.abc import Sequence


def quantile(ordered: Sequence[float], q: float, digits: int = 3) -> float | None:
    """The q-quantile of already sorted values (None when there are none)."""
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], digits)
