"""A sidecar as the registry records it: its streams and, per xDS type, what each was
sent, ACKed and NACKed; and the answers a wait for a generation gets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from faultplane.xds import types


@dataclass
class TypeStatus:
    sent_version: str = ""
    sent_generation: int = 0
    sent_at: float | None = None
    acked_version: str = ""
    acked_generation: int = 0
    acked_at: float | None = None
    nacked_version: str = ""
    nacked_generation: int = 0
    nacked_at: float | None = None
    last_error: str = ""


NOTHING_SENT = TypeStatus()  # what a stream that has been sent nothing yet reports


def status_of(statuses: dict[str, TypeStatus], type_url: str) -> TypeStatus:
    found = statuses.get(type_url)
    if found is None:
        found = statuses[type_url] = TypeStatus()
    return found


@dataclass
class StreamStatus:
    """One open xDS stream of a sidecar: its ADS stream (`served` None: any type) or a
    per-type stream (`served` = the one type it carries)."""

    key: int
    peer: str
    served: str | None
    names: dict[str, frozenset[str]] = field(default_factory=dict)  # type -> subscribed
    types: dict[str, TypeStatus] = field(default_factory=dict)

    def serves(self, type_url: str) -> bool:
        if self.served is not None:
            return self.served == type_url
        return type_url in self.names or type_url in self.types

    def status(self, type_url: str) -> TypeStatus:
        return status_of(self.types, type_url)

    def named(self, type_url: str, error: str) -> str:
        """`error`, naming the resource it is about where the stream carries only that
        one (an ECDS slot): "faultplane.inbound.0: <Envoy's message>"."""
        names = self.names.get(type_url)
        if self.served in types.PER_NAME_STREAMS and names:
            return f"{', '.join(sorted(names))}: {error}"
        return error


@dataclass
class SidecarStatus:
    """A sidecar's identity and evidence. `types` holds per type the sent version (the
    latest), the ACKed one (that of its least advanced open stream, so "ACKed" means on
    every stream) and the latest NACK (naming its slot, for ECDS)."""

    node_id: str
    cluster: str
    metadata: Mapping[str, Any]
    peer: str = ""  # the connection holding it, or that last held it
    connected_at: float | None = None
    disconnected_at: float | None = None
    types: dict[str, TypeStatus] = field(default_factory=dict)
    open_streams: dict[int, StreamStatus] = field(default_factory=dict)

    @property
    def streams(self) -> int:
        return len(self.open_streams)

    @property
    def connected(self) -> bool:
        return bool(self.open_streams)

    @property
    def service(self) -> str:
        return str(self.metadata.get("service") or self.cluster)

    @property
    def labels(self) -> dict[str, str]:
        labels = self.metadata.get("labels") or {}
        return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}

    def status(self, type_url: str) -> TypeStatus:
        return status_of(self.types, type_url)

    def streams_of(self, type_url: str) -> list[StreamStatus]:
        """The open streams that carry `type_url`."""
        return [stream for stream in self.open_streams.values() if stream.serves(type_url)]


@dataclass(frozen=True)
class AckOutcome:
    """How a sidecar answered: an ACK of the awaited generation or newer, or a NACK of
    exactly the awaited generation."""

    acked: bool
    version: str
    error: str = ""


class AckTimeout(TimeoutError):
    """No ACK of the awaited generation (nor NACK of exactly it) in time.

    `later_nack` is set when a later response, which also carried the awaited change, was
    NACKed meanwhile: the change may be fine, but it never got through on its own.
    """

    def __init__(self, generation: int, later_nack: AckOutcome | None) -> None:
        self.generation = generation
        self.later_nack = later_nack
        message = f"no ACK of generation {generation}"
        if later_nack is not None:
            message += (
                f"; a later response carrying it (version {later_nack.version}) was NACKed:"
                f" {later_nack.error}"
            )
        super().__init__(message)


class NodeHeld(Exception):
    """A stream for a node id whose streams are open on another connection."""

    def __init__(self, node_id: str, peer: str, holder: str) -> None:
        self.node_id, self.peer, self.holder = node_id, peer, holder
        super().__init__(
            f"node.id: {node_id!r} is already connected from {holder}; refusing the stream"
            f" from {peer} (two sidecars with one node id?)"
        )


def least_acked(streams: list[StreamStatus], type_url: str) -> TypeStatus:
    return min(
        (stream.types.get(type_url, NOTHING_SENT) for stream in streams),
        key=lambda status: status.acked_generation,
    )
