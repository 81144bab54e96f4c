"""Drives the patterns of an ACTIVE injection: at each change point, one RTDS push.

Each part with a pattern has its own driver, moving that part's runtime keys (delivery id
`<id>` for part 0, `<id>.<i>` after it, see faultplane.model.spec.part_id) and nothing
else: parts without a pattern stay on at their percentage. The lifecycle starts the
drivers once ACTIVE (`start_drivers`) and stops them all before it withdraws
(`stop_drivers`), so there is still one lifecycle and one end for every part. The lease is
the lifecycle's and does not change (the layer stays leased at every level, 0 included,
so the dead-man's switch covers the whole run). Only the runtime layer changes: the
assignment's `level` scales its runtime keys, and the armed routes or ECDS slots stay
byte-identical (faultplane.render.faults).

Every switch is evidence in the history, as an ACTIVE -> ACTIVE transition carrying the
sidecars' answers, naming the part in a multi-fault experiment (`faults[1] burst: off`);
bounded per part: the first MAX_RECORDED switches each, then one summary when its driver
stops.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from faultplane.model.injection import Evidence, Injection, State
from faultplane.model.spec import FaultSpec
from faultplane.xds import types

if TYPE_CHECKING:
    from faultplane.delivery.plane import Delivery
    from faultplane.lifecycle.lifecycle import Transitions

log = structlog.get_logger("faultplane.pattern")

MAX_RECORDED = 50  # switches recorded one by one per part; past that, one summary at the end


def level_at(fault: FaultSpec, elapsed: float, duration: float) -> float:
    """The share of the fault's own percentage switched on `elapsed` seconds in (1.0
    without a pattern; a ramp above the fault's percentage gives more than 1)."""
    if fault.pattern is None:
        return 1.0
    return fault.pattern.percentage_at(elapsed, fault.percentage, duration) / fault.percentage


def schedule(fault: FaultSpec, duration: float) -> list[tuple[float, float]]:
    """(seconds after switch-on, level) at every change point of one fault's pattern:
    what its driver pushes. Each level is read mid-phase, so a boundary's float rounding
    cannot pick a neighbour."""
    pattern = fault.pattern
    if pattern is None:
        return []
    points = pattern.change_points(duration)
    ends = [*points[1:], duration]
    return [
        (at, level_at(fault, (at + end) / 2, duration))
        for at, end in zip(points, ends, strict=True)
    ]


def start_drivers(
    injection: Injection, delivery: Delivery, transitions: Transitions
) -> list[asyncio.Task[None]]:
    """One driver task per part with a pattern of an ACTIVE injection (none: constant)."""
    if injection.activated_at is None:
        return []
    parts = injection.parts()
    tasks = []
    for index, (key, part, nodes) in enumerate(parts):
        if part.fault.pattern is None:
            continue
        name = f"faults[{index}] " if len(parts) > 1 else ""
        driver = _Driver(injection, key, nodes, SwitchLog(part.fault, name), delivery, transitions)
        tasks.append(asyncio.create_task(driver.run(), name=f"pattern-{key}"))
    return tasks


async def stop_drivers(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel every driver and wait for them all: no push of theirs may follow the
    withdrawal."""
    if not tasks:
        return
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks)  # never raises; a cancel of the caller still propagates
    for task in tasks:
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("pattern driver failed; its part stayed at its last level",
                      driver=task.get_name(), error=str(error))  # fmt: skip


@dataclass
class SwitchLog:
    """Which of a part's switches go into the history, and in what words: the first
    MAX_RECORDED each, then nothing until the `summary` at the end (a long random run
    must not flood the history, the store or the watchers). `part`: the words naming the
    part in a multi-fault experiment (`faults[1] `), empty for a single fault."""

    fault: FaultSpec
    part: str = ""
    switches: int = 0
    last_on: float | None = None
    last_off: float | None = None

    def switched(self, level: float, at: float) -> str | None:
        """The reason to record for this switch, or None once past MAX_RECORDED."""
        self.switches += 1
        if level > 0:
            self.last_on = at
        else:
            self.last_off = at
        if self.switches > MAX_RECORDED:
            return None
        assert self.fault.pattern is not None
        percent = min(100.0, self.fault.percentage * level)
        state = f"on at {percent:g}%" if level > 0 else "off"
        reason = f"{self.part}{self.fault.pattern.kind}: {state} (switch {self.switches})"
        if self.switches == MAX_RECORDED:
            reason += "; further switches summarised at the end"
        return reason

    def summary(self) -> str | None:
        """The closing entry, when switches went unrecorded; None otherwise."""
        if self.switches <= MAX_RECORDED or self.fault.pattern is None:
            return None
        return (
            f"{self.part}{self.fault.pattern.kind}: {self.switches} switches, last on at "
            f"{_clock(self.last_on)}, last off at {_clock(self.last_off)}"
        )


class _Driver:
    """One part's pattern: `key` is the part's delivery id, `nodes` its targets."""

    def __init__(
        self,
        injection: Injection,
        key: str,
        nodes: tuple[str, ...],
        switches: SwitchLog,
        delivery: Delivery,
        transitions: Transitions,
    ) -> None:
        self._injection = injection
        self._key = key
        self._nodes = nodes
        self._log = switches
        self._delivery = delivery
        self._transitions = transitions

    async def run(self) -> None:
        injection = self._injection
        assert injection.activated_at is not None
        start = injection.activated_at
        steps = schedule(self._log.fault, injection.spec.duration_seconds)
        pending = [step for step in steps if start + step[0] > time.time()]
        passed = steps[: len(steps) - len(pending)]
        try:
            if passed:  # the level now (resumed after a restart: it may have moved on)
                await self._switch(passed[-1][1])
            for at, level in pending:
                await asyncio.sleep(max(0.0, start + at - time.time()))
                await self._switch(level)
        finally:
            if (summary := self._log.summary()) is not None:
                self._record(summary, ())

    async def _switch(self, level: float) -> None:
        key = self._key
        targets = [n for n in self._nodes if self._delivery.carries(n, key)]
        carried = self._delivery.carries(targets[0], key) if targets else None
        if carried is None or not carried.enabled or carried.level == level:
            return
        evidence = await self._delivery.push(
            targets, key, replace(carried, level=level), types.RUNTIME, wait_gone=False
        )
        if (reason := self._log.switched(level, time.time())) is not None:
            self._record(reason, evidence)

    def _record(self, reason: str, evidence: tuple[Evidence, ...]) -> None:
        if self._injection.state is not State.ACTIVE:
            return
        self._transitions.make(self._injection, State.ACTIVE, reason, evidence)
        log.info("pattern switched", injection=self._injection.id, part=self._key, reason=reason)


def _clock(at: float | None) -> str:
    if at is None:
        return "-"
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%SZ")
