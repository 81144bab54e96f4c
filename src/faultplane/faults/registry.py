"""The one place fault kinds are registered, and looked up by name or by spec.

Each line below is a kind; a new kind is its module plus one `register` line here.
"""

from __future__ import annotations

from typing import Any

from faultplane.faults.abort import ABORT
from faultplane.faults.bandwidth import BANDWIDTH
from faultplane.faults.kernel import KERNEL
from faultplane.faults.kind import FaultKind
from faultplane.faults.latency import LATENCY
from faultplane.faults.partition import PARTITION

_BY_NAME: dict[str, FaultKind[Any]] = {}
_BY_SPEC: dict[type, FaultKind[Any]] = {}


def register(kind: FaultKind[Any], named: bool = True) -> None:
    """Make `kind` known to the API, rendering and the CLI's tables. Not `named`: known by
    its spec only, never a document's `type` (the kernel layer, chosen by `layer`)."""
    if kind.name in _BY_NAME or kind.spec_type in _BY_SPEC:
        raise ValueError(f"fault kind {kind.name!r} is already registered")
    if named:
        _BY_NAME[kind.name] = kind
    _BY_SPEC[kind.spec_type] = kind


def unregister(name: str) -> None:
    """Forget a kind (tests that register one of their own clean up with this)."""
    kind = _BY_NAME.pop(name)
    del _BY_SPEC[kind.spec_type]


def kind_named(name: str) -> FaultKind[Any] | None:
    """The kind a document's `type` names, or None if there is none by that name."""
    return _BY_NAME.get(name)


def kind_of(spec: object) -> FaultKind[Any]:
    """The kind a validated spec belongs to (a FaultSpec's `kind`)."""
    return _BY_SPEC[type(spec)]


def kind_names() -> list[str]:
    """Every registered kind's name, sorted: what a document's `type` may be."""
    return sorted(_BY_NAME)


register(LATENCY)
register(ABORT)
register(BANDWIDTH)
register(PARTITION)
register(KERNEL, named=False)
