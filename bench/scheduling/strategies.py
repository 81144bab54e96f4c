"""The three ways to drain the same queue, all replayed through the packer's clock.

- faultplane: the packer with the whole policy (coverage order, every rule).
- serial: one experiment at a time, first come first served, keeping the calendar
  (windows, blackouts, not_before) and the cool-down: the safe way without a packer.
- fis: the AWS FIS rule alone (at most one experiment started per service per hour) and
  otherwise greedy first come first served, keeping the calendar; it knows nothing of
  sidecars, scopes or request paths, so the checker counts what it breaks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from faultplane.scheduling import rules
from faultplane.scheduling.model import Experiment
from faultplane.scheduling.packer import Plan, Planner, State, plan
from faultplane.scheduling.rules import Policy

FIS_RULES = (rules.frozen, rules.not_before, rules.calendar, rules.cooldown)


def first_come(exp: Experiment, last_started: Mapping[str, datetime]) -> tuple[Any, ...]:
    return (exp.submitted_at, exp.id)


def faultplane(state: State, policy: Policy) -> Plan:
    return plan(state, policy)


def serial(state: State, policy: Policy) -> Plan:
    return plan(state, replace(policy, max_fleet=1), order=first_come)


def fis(state: State, policy: Policy) -> Plan:
    return plan(state, policy, order=first_come, rules=FIS_RULES)


STRATEGIES: dict[str, Planner] = {"faultplane": faultplane, "serial": serial, "fis": fis}
