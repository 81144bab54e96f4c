"""A request's `Fault` message, in either of its forms, as a kind and its fields.

The flat form names the kind in `type` and carries its fields on `Fault` itself (the
seed document's `{"type": "latency", "p50_ms": 200, "p99_ms": 500}`); the per-kind form
sets one member of the `kind` oneof (`{"latency": {"p50_ms": 200}}`). Both become the
same plain mapping, so a kind parses one thing, and a kind that uses flat fields needs
no proto change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from faultplane.faults.kernel import KERNEL, parse_kernel_fault
from faultplane.faults.kind import FaultKind, FieldValues, Problems
from faultplane.faults.registry import kind_named, kind_names
from faultplane.v1 import faultplane_pb2 as pb

_ONEOF = "kind"
_ONEOF_MEMBERS = frozenset(f.name for f in pb.Fault.DESCRIPTOR.oneofs_by_name[_ONEOF].fields)
# What any fault has, whatever its kind (a pattern changes any kind's percentage).
_COMMON_FIELDS = frozenset({"type", "percentage", "max_active", "pattern"})
# The kinds' fields that sit on Fault itself, in the flat form.
FLAT_FIELDS = tuple(
    f.name
    for f in pb.Fault.DESCRIPTOR.fields
    if f.name not in _COMMON_FIELDS and f.name not in _ONEOF_MEMBERS
)


@dataclass(frozen=True)
class GivenFault:
    """The kind a request's fault names, its fields, and their path in the request
    (`fault`, or `fault.latency` in the per-kind form)."""

    kind: FaultKind[Any]
    path: str
    fields: FieldValues


def given_fault(fault: pb.Fault, problems: Problems) -> GivenFault | None:
    """The kind and fields of `fault`, or None when no kind can be told (unknown type,
    neither or both forms). Fields that are not the kind's are problems, not passed on."""
    member = fault.WhichOneof(_ONEOF)
    flat = {name: getattr(fault, name) for name in FLAT_FIELDS if fault.HasField(name)}
    if member is None:
        kind = kind_named(fault.type)
        if kind is None:
            problems.add("fault.type", f"must be one of {', '.join(kind_names())}")
            return None
        return GivenFault(kind, "fault", _own_fields(kind, flat, "fault", problems))
    path = f"fault.{member}"
    if fault.type:
        problems.add(
            "fault.type", f"give type with its fields, or {path}, not both (one form per fault)"
        )
        return None
    kind = kind_named(member)
    if kind is None:
        problems.add(path, f"no such fault kind here (known: {', '.join(kind_names())})")
        return None
    for name in flat:
        problems.add(f"fault.{name}", f"the fault is given as {path}: its fields go inside it")
    fields = {f.name: value for f, value in getattr(fault, member).ListFields()}
    return GivenFault(kind, path, _own_fields(kind, fields, path, problems))


def _own_fields(
    kind: FaultKind[Any], fields: FieldValues, path: str, problems: Problems
) -> FieldValues:
    """Only the kind's own fields go on to its parser; any other is a problem at its path."""
    for name in fields:
        if name not in kind.field_names:
            problems.add(f"{path}.{name}", f"not a field of a {kind.name} fault")
    return {name: value for name, value in fields.items() if name in kind.field_names}


def describe_fault(fault: pb.Fault) -> str:
    """A few words for tables (`abort http 503`); a fault no registered kind accepts is
    shown by the name it was given, never as some other kind."""
    if fault.HasField("layer"):  # a node agent's fault (faultplane.faults.kernel)
        fields = {f.name: value for f, value in fault.ListFields()}
        kernel = parse_kernel_fault(fields, Problems())
        return KERNEL.describe(kernel) if kernel else f"kernel {fault.type or '-'}"
    given = given_fault(fault, Problems())
    spec = given.kind.parse(given.fields, given.path, Problems()) if given else None
    if given is None or spec is None:
        return fault.type or fault.WhichOneof(_ONEOF) or "-"
    return given.kind.describe(spec)
