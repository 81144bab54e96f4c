"""Faults that change over time: a burst, a ramp or a random on/off, as pure functions.

A pattern says what share of its requests a fault hits at each moment of its run; the
armed configuration never changes, only the runtime layer's percentages do (one RTDS push
per change, see faultplane.lifecycle.pattern). Everything here is pure and bounded:
`percentage_at` answers for any moment, `change_points` lists the moments the answer
changes, and a pattern whose run would switch more than MAX_CHANGES times is refused at
the edge (`parse_pattern`), so the driver's pushes and the history stay bounded.

The random pattern is reproducible: whether tick `i` is on is a pure function of the seed
and `i` (a hash, not a stateful generator), so a run can be replayed and checked.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from faultplane.faults.kind import Problems

MIN_SECONDS = 1.0  # a phase or tick shorter than this is below what one RTDS push resolves
MAX_CHANGES = 10_000  # RTDS pushes (and switches) per run
MAX_STEPS = 1_000
KINDS = ("burst", "ramp", "random")


class Pattern(Protocol):
    """What every pattern answers; `duration` is the run's, in seconds."""

    kind: str

    def percentage_at(self, elapsed: float, base: float, duration: float) -> float:
        """The share of requests faulted `elapsed` seconds after switch-on, given the
        fault's own `percentage` (`base`)."""
        ...

    def change_points(self, duration: float) -> list[float]:
        """The moments (seconds after switch-on, 0 first, ascending, below `duration`)
        at which `percentage_at` takes a new value."""
        ...

    def describe(self) -> str:
        """A few words for tables: `burst 5s on / 25s off`."""
        ...


@dataclass(frozen=True)
class Burst:
    """On for `on_seconds`, off for `off_seconds`, repeated; starts on."""

    on_seconds: float
    off_seconds: float
    kind: str = "burst"

    def is_on(self, elapsed: float) -> bool:
        return elapsed % (self.on_seconds + self.off_seconds) < self.on_seconds

    def percentage_at(self, elapsed: float, base: float, duration: float) -> float:
        return base if self.is_on(elapsed) else 0.0

    def change_points(self, duration: float) -> list[float]:
        period = self.on_seconds + self.off_seconds
        points: list[float] = []
        for cycle in range(min(math.ceil(duration / period), MAX_CHANGES)):
            start = cycle * period
            points += [t for t in (start, start + self.on_seconds) if t < duration]
        return points[:MAX_CHANGES]

    def describe(self) -> str:
        return f"burst {self.on_seconds:g}s on / {self.off_seconds:g}s off"


@dataclass(frozen=True)
class Ramp:
    """`steps` levels from `from_percentage` to `to_percentage` (absolute percentages,
    the fault's own is not used), each held for an equal share of the run."""

    from_percentage: float
    to_percentage: float
    steps: int
    kind: str = "ramp"

    def step_at(self, elapsed: float, duration: float) -> int:
        return min(self.steps - 1, max(0, math.floor(elapsed * self.steps / duration)))

    def level(self, step: int) -> float:
        if self.steps == 1:
            return self.from_percentage
        fraction = step / (self.steps - 1)
        return self.from_percentage + (self.to_percentage - self.from_percentage) * fraction

    def percentage_at(self, elapsed: float, base: float, duration: float) -> float:
        return self.level(self.step_at(elapsed, duration))

    def change_points(self, duration: float) -> list[float]:
        return [duration * step / self.steps for step in range(self.steps)]

    def describe(self) -> str:
        return f"ramp {self.from_percentage:g}%→{self.to_percentage:g}% in {self.steps} steps"


@dataclass(frozen=True)
class Random:
    """Each tick of `tick_seconds` is on with `on_probability`, decided by `seed` and
    the tick's index alone (reproducible, independent of when anyone asks)."""

    on_probability: float
    tick_seconds: float
    seed: int
    kind: str = "random"

    def is_on_tick(self, tick: int) -> bool:
        digest = hashlib.sha256(f"{self.seed}:{tick}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.on_probability

    def percentage_at(self, elapsed: float, base: float, duration: float) -> float:
        return base if self.is_on_tick(math.floor(elapsed / self.tick_seconds)) else 0.0

    def change_points(self, duration: float) -> list[float]:
        ticks = min(math.ceil(duration / self.tick_seconds), MAX_CHANGES)
        points: list[float] = []
        previous: bool | None = None
        for tick in range(ticks):
            on = self.is_on_tick(tick)
            if on != previous:
                points.append(tick * self.tick_seconds)
            previous = on
        return points

    def describe(self) -> str:
        return f"random {self.on_probability:g} per {self.tick_seconds:g}s tick (seed {self.seed})"


def parse_pattern(
    kind: str, fields: Mapping[str, float], duration: float | None, problems: Problems
) -> Pattern | None:
    """The pattern a request's `fault.pattern` describes (`fields`: its set numeric
    fields), or None with every problem added under `fault.pattern.*`. `duration` None:
    the run's duration was itself refused, so duration-bound checks are skipped."""
    path = "fault.pattern"
    allowed = {
        "burst": {"on_seconds", "off_seconds"},
        "ramp": {"from_percentage", "to_percentage", "steps"},
        "random": {"on_probability", "tick_seconds", "seed"},
    }.get(kind)
    if allowed is None:
        problems.add(f"{path}.kind", f"must be one of {', '.join(KINDS)}")
        return None
    before = len(problems.found)
    for name in sorted(set(fields) - allowed):
        problems.add(f"{path}.{name}", f"not a field of a {kind} pattern")
    for name in sorted(allowed - set(fields) - {"seed"}):
        problems.add(f"{path}.{name}", f"required for a {kind} pattern")
    if len(problems.found) > before:
        return None
    pattern: Pattern
    if kind == "burst":
        pattern = Burst(fields["on_seconds"], fields["off_seconds"])
        _seconds(pattern.on_seconds, f"{path}.on_seconds", problems)
        _seconds(pattern.off_seconds, f"{path}.off_seconds", problems)
        if duration is not None and pattern.on_seconds > duration:
            problems.add(f"{path}.on_seconds", f"must not exceed duration_seconds ({duration:g})")
    elif kind == "ramp":
        pattern = Ramp(fields["from_percentage"], fields["to_percentage"], int(fields["steps"]))
        for name in ("from_percentage", "to_percentage"):
            value = fields[name]
            if not (math.isfinite(value) and 0 <= value <= 100):
                problems.add(f"{path}.{name}", "must be between 0 and 100")
        if not 1 <= pattern.steps <= MAX_STEPS:
            problems.add(f"{path}.steps", f"must be between 1 and {MAX_STEPS}")
        elif duration is not None and duration / pattern.steps < MIN_SECONDS:
            problems.add(f"{path}.steps", f"each step must last at least {MIN_SECONDS:g}s")
    else:
        pattern = Random(
            fields["on_probability"], fields["tick_seconds"], int(fields.get("seed", 0))
        )
        if not (math.isfinite(pattern.on_probability) and 0 < pattern.on_probability <= 1):
            problems.add(f"{path}.on_probability", "must be greater than 0 and at most 1")
        _seconds(pattern.tick_seconds, f"{path}.tick_seconds", problems)
    if len(problems.found) > before:
        return None
    if duration is not None and len(pattern.change_points(duration)) >= MAX_CHANGES:
        problems.add(path, f"would switch {MAX_CHANGES} times or more over duration_seconds")
        return None
    return pattern


def _seconds(value: float, path: str, problems: Problems) -> None:
    if not (math.isfinite(value) and value >= MIN_SECONDS):
        problems.add(path, f"must be at least {MIN_SECONDS:g} second(s)")


def describe_pattern(kind: str, fields: Mapping[str, float]) -> str:
    """A few words for tables (`burst 5s on / 25s off`); a pattern that does not parse
    is shown by the kind it was given."""
    pattern = parse_pattern(kind, fields, None, Problems())
    return pattern.describe() if pattern is not None else f"{kind or '?'} pattern"
