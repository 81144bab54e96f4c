"""Bounded SLO readings per injection in memory (the store keeps every one).

The guard adds one reading per tick to every ACTIVE injection: 86,400 for a day-long run
at 1 s. Memory keeps at most MAX_READINGS per injection. The newest RECENT_READINGS stay as
they were read; older ones are thinned, never synthesised, so `faultplane get` only ever
shows values that were really read. Thinning keeps:

- the first and last of the older readings;
- the last reading of every breach (its `breach_seconds` says how long the breach lasted);
- enough readable readings that every stretch without one stays shorter than
  `abort_after` if it was shorter before (a gap is only ever widened to a real gap), so
  "the steady state went unread for abort_after or longer" is judged the same on the
  thinned list as on the full one.

Only when even that is more than OLDER_BUDGET (a long run with a short `abort_after`) are
the older readings cut into equal stretches of time, keeping each stretch's worst and
last readable reading. That loses resolution in one direction only: gaps look longer than
they were, which can make a verdict "inconclusive", never a false "held".
"""

from __future__ import annotations

from collections.abc import Sequence

from faultplane.model.injection import SloReading

MAX_READINGS = 3600
RECENT_READINGS = 1200
# After a thinning at most this many older readings remain, so the next thinning is at
# least MAX_READINGS - RECENT_READINGS - OLDER_BUDGET readings away (amortised cost).
OLDER_BUDGET = 1800
# Readable readings are kept at most this share of abort_after apart (see above).
REACH_SHARE = 0.9


def bound_readings(
    readings: list[SloReading], abort_after: float, since: float | None = None
) -> None:
    """Thin `readings` in place (the list object stays the same) once it is longer than
    MAX_READINGS. `since`: when the fault was switched on; readable readings before it do
    not count towards coverage."""
    if len(readings) <= MAX_READINGS:
        return
    older = readings[:-RECENT_READINGS]
    kept = _thin(older, abort_after, since)
    if len(kept) > OLDER_BUDGET:
        kept = _by_stretch(kept, OLDER_BUDGET // 2)
    readings[:-RECENT_READINGS] = kept


def readable(reading: SloReading) -> bool:
    return reading.value is not None and not reading.error


def _thin(older: Sequence[SloReading], abort_after: float, since: float | None) -> list[SloReading]:
    last_index = len(older) - 1
    keep = {0, last_index}
    for i, reading in enumerate(older):
        if reading.breach and (i == last_index or not older[i + 1].breach):
            keep.add(i)
    counted = [i for i, r in enumerate(older) if readable(r) and (since is None or r.at >= since)]
    if counted:
        reach = REACH_SHARE * abort_after
        keep.update((counted[0], counted[-1]))
        anchor = counted[0]
        # Greedy: from the last kept reading, keep the farthest one still within reach
        # (or the very next one, when even that is out of reach: a real gap).
        for j, i in enumerate(counted[1:-1], start=1):
            if older[counted[j + 1]].at - older[anchor].at > reach:
                keep.add(i)
                anchor = i
    return [older[i] for i in sorted(keep)]


def _by_stretch(readings: list[SloReading], stretches: int) -> list[SloReading]:
    """Equal stretches of time; each keeps its worst reading and its last readable one."""
    first, last = readings[0].at, readings[-1].at
    width = (last - first) / stretches or 1.0
    worst: dict[int, int] = {}  # stretch -> index of its worst reading
    latest_readable: dict[int, int] = {}
    for i, reading in enumerate(readings):
        stretch = min(int((reading.at - first) / width), stretches - 1)
        if stretch not in worst or _badness(reading) > _badness(readings[worst[stretch]]):
            worst[stretch] = i
        if readable(reading):
            latest_readable[stretch] = i
    keep = {0, len(readings) - 1, *worst.values(), *latest_readable.values()}
    return [readings[i] for i in sorted(keep)]


def _badness(reading: SloReading) -> tuple[bool, bool, float, float]:
    """Breaching first, then unreadable, then the longest breach, then the lowest value."""
    value = reading.value if reading.value is not None else 0.0
    return (reading.breach, reading.value is None, reading.breach_seconds, -value)
