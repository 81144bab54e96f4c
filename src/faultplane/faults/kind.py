"""What every fault kind provides, and where its problems are collected.

The API edge turns a request's fault into a kind's spec (a frozen dataclass) with
`parse`; rendering realises that spec on fault slots with `render`; the CLI's tables
name it with `describe`. Nothing outside a kind's module knows its fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from faultplane.faults.slots import SlotConfig
    from faultplane.model.spec import FaultSpec

# A kind's fields as given in the request, set fields only, keyed by their proto names;
# numbers as the proto holds them (int for integer fields, float for doubles), or text
# for a string field such as a partition's direction.
FieldValues = Mapping[str, float | str]

Spec = TypeVar("Spec")


@dataclass
class Problems:
    """(field path, reason) pairs, collected rather than raised: every problem of a
    request is reported at once, so an operator fixes a document in one go."""

    found: list[tuple[str, str]] = field(default_factory=list)

    def add(self, path: str, reason: str) -> None:
        self.found.append((path, reason))


class FaultKind(Protocol[Spec]):
    """One kind of fault, from request fields to fault-filter config.

    `name` is the document's `type` (and the member of `Fault.kind` that carries the
    kind's own message, if it has one); `field_names` are the fields it reads.
    """

    name: str
    field_names: frozenset[str]
    spec_type: type[Spec]

    def parse(self, fields: FieldValues, path: str, problems: Problems) -> Spec | None:
        """The spec, or None with every problem added under `path` (`fault`, or
        `fault.latency` in the per-kind form): `fault.p99_ms: must be ...`."""
        ...

    def render(self, injection_id: str, fault: FaultSpec) -> list[SlotConfig]:
        """The fault slots that realise `fault` (whose `kind` is this kind's spec), each
        armed at 0 % with runtime keys unique to the injection."""
        ...

    def describe(self, spec: Spec) -> str:
        """A few words for tables: `latency p50 200ms p99 500ms`."""
        ...
