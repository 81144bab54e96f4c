"""Chaos Toolkit probes: an injection's state, verdict and steady-state readings.

Each takes an optional `injection_id`; without it, the latest injection this run
started (Chaos Toolkit cannot pass one activity's output to the next). Module
`faultplane.chaostoolkit.probes`:
- `injection_state()`: "PENDING", "ACTIVE", "COMPLETED", "ABORTED", "FAILED", ...
- `verdict()`: "hypothesis held", "hypothesis refuted", "inconclusive: ...", or "" while
  the injection lives.
- `slo_value()`: the guard's latest reading of the steady-state SLO (a share, 0..1),
  None before the first reading or when the SLO could not be read.
- `hypothesis_holds()`: the steady-state hypothesis probe (tolerance `true`): true before
  this run has injected anything and while the guard has refuted nothing; once the
  injection has ended, true only for "hypothesis held".
- `wait_until_ended(timeout=600)`: the method's wait: returns when the injection is
  COMPLETED, ABORTED or FAILED (deadline, guard, operator), with its summary.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faultplane.chaostoolkit import registry
from faultplane.chaostoolkit.connection import call
from faultplane.chaostoolkit.following import follow, get, has_ended, state_name, summary
from faultplane.chaostoolkit.interruption import interruptible
from faultplane.v1 import faultplane_pb2 as pb

__all__ = ["hypothesis_holds", "injection_state", "slo_value", "verdict", "wait_until_ended"]

HELD = "hypothesis held"


@interruptible
def injection_state(
    injection_id: str | None = None,
    configuration: Mapping[str, Any] | None = None,
    secrets: Mapping[str, Any] | None = None,
) -> str:
    return state_name(_read(injection_id, configuration, secrets).state)


@interruptible
def verdict(
    injection_id: str | None = None,
    configuration: Mapping[str, Any] | None = None,
    secrets: Mapping[str, Any] | None = None,
) -> str:
    return _read(injection_id, configuration, secrets).verdict


@interruptible
def slo_value(
    injection_id: str | None = None,
    configuration: Mapping[str, Any] | None = None,
    secrets: Mapping[str, Any] | None = None,
) -> float | None:
    readings = _read(injection_id, configuration, secrets).readings
    if not readings or not readings[-1].HasField("value"):
        return None
    return readings[-1].value


@interruptible
def hypothesis_holds(
    injection_id: str | None = None,
    configuration: Mapping[str, Any] | None = None,
    secrets: Mapping[str, Any] | None = None,
) -> bool:
    if injection_id is None and not registry.started():
        return True  # before the method: nothing injected, nothing refuted
    injection = _read(injection_id, configuration, secrets)
    return injection.verdict == HELD if has_ended(injection) else True


@interruptible
def wait_until_ended(
    injection_id: str | None = None,
    timeout: float = 600.0,
    configuration: Mapping[str, Any] | None = None,
    secrets: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    injection_id, connection = registry.resolve(injection_id, configuration, secrets)
    ended = call(connection, lambda stub: follow(stub, injection_id, has_ended, timeout, "end"))
    return summary(ended)


def _read(
    injection_id: str | None,
    configuration: Mapping[str, Any] | None,
    secrets: Mapping[str, Any] | None,
) -> pb.Injection:
    injection_id, connection = registry.resolve(injection_id, configuration, secrets)
    return call(connection, lambda stub: get(stub, injection_id))
