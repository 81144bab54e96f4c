"""The kernel fault kinds: each reads its own fields and says which nftables verdicts
realise it.

A kind is one small class with `parse` (fields -> its spec, problems collected under the
field's path) and `verdicts` (spec -> the statements that end each rule, after the scope's
matches); `describe` names it in tables and plans. Adding a kind is one class here and one
line in `KINDS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from faultplane.faults.kind import FieldValues, Problems

# nftables' numgen gives integers, so a loss percentage is rendered in basis points:
# `numgen random mod 10000 < 2550` drops 25.5 % of matching packets.
LOSS_RESOLUTION = 10_000


@dataclass(frozen=True)
class PacketLoss:
    """A share of matching packets dropped at random, (0, 100]."""

    percentage: float


@dataclass(frozen=True)
class Partition:
    """Every matching packet dropped: the far end looks dead (clients time out)."""


@dataclass(frozen=True)
class Reset:
    """TCP answered with a RST, UDP with ICMP port unreachable. Egress: the pod's own
    connections to the far end are refused at once. Ingress: the far end's packets are
    answered with the RST (its connections to the pod are reset)."""


@dataclass(frozen=True)
class Bandwidth:
    """Matching traffic above `kbps` KiB/s dropped: a policer (TCP backs off to about the
    rate). nft's byte limit starts with one second's worth of tokens, so the first
    `kbps` KiB pass at full speed."""

    kbps: int


@dataclass(frozen=True)
class Latency:
    """Added delay: needs the netem qdisc, which nftables cannot do; only an agent that
    reports netem may take it, and this agent renders no nftables rule for it."""

    delay_ms: int


KindSpec = PacketLoss | Partition | Reset | Bandwidth | Latency


class KernelKind(Protocol):
    name: str
    field_names: frozenset[str]
    needs_netem: bool

    def parse(self, fields: FieldValues, path: str, problems: Problems) -> KindSpec | None: ...

    def verdicts(self, spec: Any) -> list[str]: ...

    def describe(self, spec: Any) -> str: ...


def _number(fields: FieldValues, name: str, path: str, problems: Problems) -> float | None:
    value = fields.get(name)
    if value is None or value == 0:
        return None
    if isinstance(value, (str, bool)):
        problems.add(f"{path}.{name}", f"must be a number, not {value!r}")
        return None
    return float(value)


class PacketLossKind:
    name = "packet_loss"
    field_names = frozenset({"percentage"})
    needs_netem = False

    def parse(self, fields: FieldValues, path: str, problems: Problems) -> PacketLoss | None:
        percentage = _number(fields, "percentage", path, problems)
        if percentage is None or not 0 < percentage <= 100:
            problems.add(
                f"{path}.percentage",
                f"packet_loss needs a percentage in (0, 100], not {fields.get('percentage')}",
            )
            return None
        return PacketLoss(percentage)

    def verdicts(self, spec: PacketLoss) -> list[str]:
        threshold = round(spec.percentage * LOSS_RESOLUTION / 100)
        return [f"numgen random mod {LOSS_RESOLUTION} < {threshold} drop"]

    def describe(self, spec: PacketLoss) -> str:
        return f"packet_loss {spec.percentage:g}%"


class PartitionKind:
    name = "partition"
    field_names: frozenset[str] = frozenset()
    needs_netem = False

    def parse(self, fields: FieldValues, path: str, problems: Problems) -> Partition | None:
        return Partition()

    def verdicts(self, spec: Partition) -> list[str]:
        return ["drop"]

    def describe(self, spec: Partition) -> str:
        return "partition"


class ResetKind:
    name = "reset"
    field_names: frozenset[str] = frozenset()
    needs_netem = False

    def parse(self, fields: FieldValues, path: str, problems: Problems) -> Reset | None:
        return Reset()

    def verdicts(self, spec: Reset) -> list[str]:
        # `icmpx`: the inet family's ICMP/ICMPv6-neutral codes. Other protocols pass.
        return [
            "meta l4proto tcp reject with tcp reset",
            "meta l4proto udp reject with icmpx type port-unreachable",
        ]

    def describe(self, spec: Reset) -> str:
        return "reset"


class BandwidthKind:
    name = "bandwidth"
    field_names = frozenset({"kbps"})
    needs_netem = False

    def parse(self, fields: FieldValues, path: str, problems: Problems) -> Bandwidth | None:
        kbps = _number(fields, "kbps", path, problems)
        if kbps is None or kbps < 1 or kbps != int(kbps):
            problems.add(
                f"{path}.kbps",
                f"bandwidth needs whole KiB/s of at least 1, not {fields.get('kbps')}",
            )
            return None
        return Bandwidth(int(kbps))

    def verdicts(self, spec: Bandwidth) -> list[str]:
        return [f"limit rate over {spec.kbps} kbytes/second drop"]

    def describe(self, spec: Bandwidth) -> str:
        return f"bandwidth {spec.kbps}KiB/s"


class LatencyKind:
    name = "latency"
    field_names = frozenset({"delay_ms"})
    needs_netem = True

    def parse(self, fields: FieldValues, path: str, problems: Problems) -> Latency | None:
        delay = _number(fields, "delay_ms", path, problems)
        if delay is None or delay < 1 or delay != int(delay):
            problems.add(f"{path}.delay_ms", "latency needs whole milliseconds of at least 1")
            return None
        return Latency(int(delay))

    def verdicts(self, spec: Latency) -> list[str]:
        raise ValueError("latency is a netem qdisc, not an nftables rule")

    def describe(self, spec: Latency) -> str:
        return f"latency {spec.delay_ms}ms"


KINDS: Mapping[str, KernelKind] = {
    kind.name: kind
    for kind in (PacketLossKind(), PartitionKind(), ResetKind(), BandwidthKind(), LatencyKind())
}


def kind_of(spec: KindSpec) -> KernelKind:
    """The kind a parsed spec belongs to."""
    return KINDS[_NAMES[type(spec)]]


_NAMES: Mapping[type, str] = {
    PacketLoss: "packet_loss",
    Partition: "partition",
    Reset: "reset",
    Bandwidth: "bandwidth",
    Latency: "latency",
}
