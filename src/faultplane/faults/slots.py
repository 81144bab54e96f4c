"""The pieces every kind's rendering shares: a slot's config and its runtime keys.

A fault is armed as a full HTTPFault whose percentages are 0 and whose
`*_percent_runtime` keys are unique to the injection; the keys, set in the RTDS layer,
switch it on (see faultplane.render.faults).
"""

from __future__ import annotations

from dataclasses import dataclass

from envoy.extensions.filters.common.fault.v3 import fault_pb2 as common_fault_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2

from faultplane.model.spec import FaultSpec


@dataclass(frozen=True)
class SlotConfig:
    """What one fault slot does: its HTTPFault and the runtime keys that switch it on."""

    config: fault_pb2.HTTPFault
    runtime: dict[str, float]


def runtime_key(injection_id: str, slot: int, what: str) -> str:
    """A runtime key no other injection (or other slot of this one) uses."""
    return f"faultplane.{injection_id}.{slot}.{what}"


def zero_percent() -> percent_pb2.FractionalPercent:
    """Armed but off: the runtime key, not this percentage, decides."""
    return percent_pb2.FractionalPercent(
        numerator=0, denominator=percent_pb2.FractionalPercent.MILLION
    )


def http_fault(fault: FaultSpec) -> fault_pb2.HTTPFault:
    """An HTTPFault with what every kind shares (max_active), for the kind to fill in."""
    config = fault_pb2.HTTPFault()
    if fault.max_active is not None:
        config.max_active_faults.value = fault.max_active
    return config


def delay_slot(
    injection_id: str, slot: int, ms: float, percent: float, fault: FaultSpec
) -> SlotConfig:
    """A fixed delay of `ms` on `percent` of requests, once switched on."""
    config = http_fault(fault)
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(round(ms * 1_000_000))
    config.delay.CopyFrom(common_fault_pb2.FaultDelay(fixed_delay=delay, percentage=zero_percent()))
    key = runtime_key(injection_id, slot, "delay_pct")
    config.delay_percent_runtime = key
    return SlotConfig(config, {key: percent})
