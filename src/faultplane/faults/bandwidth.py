"""Bandwidth: a response rate limit."""

from __future__ import annotations

from dataclasses import dataclass

from faultplane.faults.kind import FieldValues, Problems
from faultplane.faults.slots import SlotConfig, http_fault, runtime_key, zero_percent
from faultplane.model.spec import FaultSpec


@dataclass(frozen=True)
class Bandwidth:
    """Responses limited to `kbps` KiB/s."""

    kbps: int


class BandwidthKind:
    name = "bandwidth"
    field_names = frozenset({"kbps"})
    spec_type = Bandwidth

    def parse(self, fields: FieldValues, path: str, problems: Problems) -> Bandwidth | None:
        kbps = fields.get("kbps")
        if kbps is None or kbps < 1:
            problems.add(f"{path}.kbps", "a bandwidth fault needs kbps of at least 1")
            return None
        return Bandwidth(int(kbps))

    def render(self, injection_id: str, fault: FaultSpec) -> list[SlotConfig]:
        bandwidth = fault.kind
        assert isinstance(bandwidth, Bandwidth)
        config = http_fault(fault)
        config.response_rate_limit.fixed_limit.limit_kbps = bandwidth.kbps
        config.response_rate_limit.percentage.CopyFrom(zero_percent())
        key = runtime_key(injection_id, 0, "rate_limit_pct")
        config.response_rate_limit_percent_runtime = key
        return [SlotConfig(config, {key: fault.percentage})]

    def describe(self, spec: Bandwidth) -> str:
        return f"bandwidth {spec.kbps}kbps"


BANDWIDTH = BandwidthKind()
