"""Which sidecars get a fault: the selector's matches, capped at max_pods.

The cap picks a deterministic subset: sidecars ranked by a hash of (injection id, node id),
so the same injection always means the same pods, and different injections spread over
different pods rather than always hitting the first ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from faultplane.model.spec import TargetSpec


def select_targets(
    target: TargetSpec, injection_id: str, sidecars: Iterable[tuple[str, Mapping[str, str]]]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(every matched node id sorted, the chosen ones in rank order) from (node id, labels)."""
    matched = sorted(node for node, labels in sidecars if target.selector.matches(labels))
    ranked = sorted(matched, key=lambda node: _rank(injection_id, node))
    return tuple(matched), tuple(ranked[: target.max_pods])


def _rank(injection_id: str, node_id: str) -> bytes:
    return hashlib.sha256(f"{injection_id}/{node_id}".encode()).digest()
