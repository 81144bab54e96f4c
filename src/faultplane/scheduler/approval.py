"""Safety levers at admission: the two-person rule and the freeze.

An injection above the configured blast radius waits for an approver who is not its
owner. A freeze refuses every new injection until it is lifted or runs out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from faultplane.spec import InjectionSpec


@dataclass(frozen=True)
class ApprovalPolicy:
    """Above any of these, an injection needs a second person. Defaults: never."""

    max_pods: int = 1_000_000
    max_percentage: float = 100.0
    max_duration_seconds: float = math.inf
    timeout_seconds: float = 3600.0

    def reasons(self, spec: InjectionSpec) -> list[str]:
        """Why `spec` needs approval; empty when it does not."""
        why = []
        if spec.target.max_pods > self.max_pods:
            why.append(f"max_pods {spec.target.max_pods} > {self.max_pods}")
        if spec.fault.percentage > self.max_percentage:
            why.append(f"percentage {spec.fault.percentage:g} > {self.max_percentage:g}")
        if spec.duration_seconds > self.max_duration_seconds:
            why.append(f"duration {spec.duration_seconds:g}s > {self.max_duration_seconds:g}s")
        return why


@dataclass(frozen=True)
class Freeze:
    until: float | None  # None: until lifted
    reason: str
    by: str
    at: float

    def active(self, now: float) -> bool:
        return self.until is None or now < self.until

    def describe(self) -> str:
        until = (
            "until lifted"
            if self.until is None
            else f"until {datetime.fromtimestamp(self.until, UTC):%Y-%m-%dT%H:%M:%SZ}"
        )
        return f"injections are frozen {until} by {self.by}: {self.reason}"

    def body(self) -> dict[str, Any]:
        return {"until": self.until, "reason": self.reason, "by": self.by, "at": self.at}

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Freeze:
        return cls(body.get("until"), body["reason"], body["by"], body["at"])
