"""Safety levers at admission: the two-person rule and the freeze.

An injection above the configured blast radius waits for an approver who is not its
owner. A freeze refuses every new injection until it is lifted or runs out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from faultplane.model.spec import InjectionSpec


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
        max_pods = max(part.target.max_pods for part in spec.parts)
        percentage = max(part.fault.percentage for part in spec.parts)
        if max_pods > self.max_pods:
            why.append(f"max_pods {max_pods} > {self.max_pods}")
        if percentage > self.max_percentage:
            why.append(f"percentage {percentage:g} > {self.max_percentage:g}")
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
        """The refusal every CreateInjection gets while frozen. It must never raise: an
        exception here turns the freeze's "no" into an internal error for everyone."""
        return f"injections are frozen {self._until_text()} by {self.by}: {self.reason}"

    def _until_text(self) -> str:
        if self.until is None:
            return "until lifted"
        try:
            return f"until {datetime.fromtimestamp(self.until, UTC):%Y-%m-%dT%H:%M:%SZ}"
        except (ValueError, OverflowError, OSError, TypeError):
            # Out of datetime's range (a freeze stored before the edge bounded `until`):
            # in effect until lifted; say what was asked for.
            return f"until Unix time {self.until!r} (effectively until lifted)"

    def body(self) -> dict[str, Any]:
        return {"until": self.until, "reason": self.reason, "by": self.by, "at": self.at}

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Freeze:
        return cls(body.get("until"), body["reason"], body["by"], body["at"])
