"""What every scenario shares: its result record, the run context, the shared mesh."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import Processes
from bench.stats import Figure, Ratio


@dataclass
class Result:
    scenario: str
    title: str
    status: str = "ok"  # ok | skipped | failed
    note: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    seconds: float = 0.0

    def figure(self, name: str, unit: str, **kwargs: Any) -> Figure:
        found = Figure(name, unit, **kwargs)
        self.figures.append(found)
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "title": self.title,
            "status": self.status,
            "note": self.note,
            "params": self.params,
            "figures": [f.to_dict() for f in self.figures],
            "ratios": [r.to_dict() for r in self.ratios],
            "seconds": round(self.seconds, 1),
        }


@dataclass
class Context:
    quick: bool
    work: Path
    procs: Processes
    shared: dict[str, Any] = field(default_factory=dict)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def pick(self, quick: Any, full: Any) -> Any:
        return quick if self.quick else full

    def dir(self, name: str) -> Path:
        path = self.work / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    async def close(self) -> None:
        while self.closers:
            await self.closers.pop()()


Run = Callable[[Context, Result], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    run: Run
    uses_mesh: bool = False  # the shared 10-sidecar mesh
