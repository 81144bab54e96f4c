"""Desired resources per sidecar, versioned per type, packed once and shared.

The ADS streams read from here and are told when a sidecar's resources change; callers
(the mesh source, later the scheduler) only ever say "sidecar S should now have R".
Versions are `<instance>-<generation>`: the instance prefix differs on every server start,
so a reconnecting Envoy's remembered version never matches content this server has not
sent it, and the generation only grows, so "ACKed generation >= g" means "has g or newer".
"""

from __future__ import annotations

import itertools
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from google.protobuf import any_pb2
from google.protobuf.message import Message

# Distinct contents kept packed. An evicted one that is still desired only loses sharing
# (equal resources are compared by bytes), so this bounds memory, not correctness: the
# soak (bench/scenarios/soak.py) saw 65,536 grow the server ~40 KB per injection.
INTERN_LIMIT = 8192
# Message objects already packed, by identity: the renders shared by a fleet (base routes
# per service) are hit on every sidecar and stay; one-off renders leave soon.
IDENTITY_LIMIT = 4096


@dataclass(frozen=True)
class TypeSnapshot:
    """One type's desired resources for one sidecar.

    `ttl_seconds` marks them as leased: Envoy drops them if not re-sent within the TTL.
    `lease_until` (monotonic) caps every lease, so that leased content can never outlive
    that moment, even if the control server dies just before.
    """

    version: str
    generation: int
    resources: Mapping[str, any_pb2.Any]
    ttl_seconds: float | None = None
    lease_until: float | None = None


Snapshot = Mapping[str, TypeSnapshot]


class AnyInterner:
    """Packs each distinct resource into `Any` once; equal resources share one object.

    Sidecars of one service get byte-identical clusters, endpoints and routes, so a fleet
    of N sidecars holds one packed copy per distinct resource, not N.
    """

    def __init__(self, limit: int = INTERN_LIMIT, identities: int = IDENTITY_LIMIT) -> None:
        self._packed: OrderedDict[tuple[str, bytes], any_pb2.Any] = OrderedDict()
        # The same message object handed in again (a rendering shared by a whole fleet)
        # is not serialized again. The message is kept alive with its entry, so its id()
        # cannot be reused while the entry exists; callers never mutate what they hand in.
        self._by_identity: OrderedDict[int, tuple[Message, any_pb2.Any]] = OrderedDict()
        self._limit = limit
        self._identities = identities

    def pack(self, message: Message) -> any_pb2.Any:
        known = self._by_identity.get(id(message))
        if known is not None and known[0] is message:
            self._by_identity.move_to_end(id(message))
            return known[1]
        packed = self._pack(message)
        self._by_identity[id(message)] = (message, packed)
        if len(self._by_identity) > self._identities:
            self._by_identity.popitem(last=False)
        return packed

    def _pack(self, message: Message) -> any_pb2.Any:
        key = (message.DESCRIPTOR.full_name, message.SerializeToString(deterministic=True))
        packed = self._packed.get(key)
        if packed is None:
            packed = any_pb2.Any(type_url=f"type.googleapis.com/{key[0]}", value=key[1])
            self._packed[key] = packed
            if len(self._packed) > self._limit:
                self._packed.popitem(last=False)
        else:
            self._packed.move_to_end(key)
        return packed


class SnapshotCache:
    """The desired state of every sidecar, and change notification for the streams."""

    def __init__(self, instance: str | None = None) -> None:
        self.instance = instance or secrets.token_hex(3)
        self._generations = itertools.count(1)
        self._snapshots: dict[str, dict[str, TypeSnapshot]] = {}
        self._watchers: dict[str, set[Callable[[], None]]] = {}
        self._interner = AnyInterner()

    def set_resources(
        self,
        node_id: str,
        resources: Mapping[str, Mapping[str, Message]],
        ttl_seconds: Mapping[str, float] | None = None,
        lease_until: float | None = None,
    ) -> dict[str, int]:
        """Make `resources` the desired state of `node_id`; returns the generation per type.

        Types whose packed content and lease are unchanged keep their version, so streams
        send nothing for them. Types absent from `resources` are left as they were.
        `lease_until` applies to the types given a TTL.
        """
        ttl_seconds = ttl_seconds or {}
        current = self._snapshots.setdefault(node_id, {})
        changed = False
        for type_url, named in resources.items():
            packed = {name: self._interner.pack(msg) for name, msg in named.items()}
            ttl = ttl_seconds.get(type_url)
            until = lease_until if ttl is not None else None
            old = current.get(type_url)
            if (
                old is not None
                and (old.ttl_seconds, old.lease_until) == (ttl, until)
                and _same(old.resources, packed)
            ):
                continue
            generation = next(self._generations)
            current[type_url] = TypeSnapshot(
                version=f"{self.instance}-{generation}",
                generation=generation,
                resources=packed,
                ttl_seconds=ttl,
                lease_until=until,
            )
            changed = True
        if changed:
            for notify in tuple(self._watchers.get(node_id, ())):
                notify()
        return {type_url: snap.generation for type_url, snap in current.items()}

    def get(self, node_id: str) -> Snapshot | None:
        return self._snapshots.get(node_id)

    def has(self, node_id: str) -> bool:
        return node_id in self._snapshots

    def forget(self, node_id: str) -> None:
        """Drop a node's desired state while no stream watches it (it is rebuilt by the
        source when the node connects again)."""
        if node_id not in self._watchers:
            self._snapshots.pop(node_id, None)

    def watch(self, node_id: str, notify: Callable[[], None]) -> Callable[[], None]:
        """Call `notify` whenever the node's resources change; returns the cancel function."""
        self._watchers.setdefault(node_id, set()).add(notify)

        def cancel() -> None:
            watchers = self._watchers.get(node_id)
            if watchers is not None:
                watchers.discard(notify)
                if not watchers:
                    del self._watchers[node_id]

        return cancel


def _same(a: Mapping[str, any_pb2.Any], b: Mapping[str, any_pb2.Any]) -> bool:
    return a.keys() == b.keys() and all(_same_any(a[name], b[name]) for name in a)


def _same_any(a: any_pb2.Any, b: any_pb2.Any) -> bool:
    """Interned, so usually identical objects; else compare the packed bytes (cheaper
    than message equality, and the same thing for an `Any`)."""
    return a is b or (a.type_url == b.type_url and a.value == b.value)
