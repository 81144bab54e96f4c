"""The state-of-the-world protocol of one ADS stream, as a pure state machine.

No sockets here: `on_request` classifies what Envoy said (ACK, NACK, stale, initial) and
`due_responses` says what to send next. Rules it enforces:
- nonces are per stream and per type; a request whose nonce is not the one in flight is
  stale: it may change the subscription but acknowledges nothing;
- at most one response per type is in flight; the next waits for its ACK or NACK;
- a response is sent only when what the sidecar should have differs from what it was
  last sent, so a NACKed version is never sent again (the sidecar keeps its old state);
- types go out in PUSH_ORDER, and a wildcard type drops resources only once no other type
  is still converging (make before break);
- leased (TTL) resources are re-sent in full every ttl/3, since Envoy 1.40 does not
  extend a TTL on a body-less heartbeat.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, duration_pb2

from faultplane.xds import types
from faultplane.xds.cache import Snapshot, TypeSnapshot

KEEP_SUFFIX = "+keep"


class Verdict(enum.Enum):
    INITIAL = "initial"  # first request of a type on this stream (or a re-subscription)
    ACK = "ack"
    NACK = "nack"
    STALE = "stale"  # nonce of a response already superseded


@dataclass(frozen=True)
class Sent:
    nonce: str
    version: str
    generation: int
    names: frozenset[str]
    sent_at: float


@dataclass
class TypeState:
    wildcard: bool = False
    names: frozenset[str] = frozenset()
    in_flight: Sent | None = None
    last_sent: Sent | None = None
    acked: Sent | None = None
    # What last_sent carried, so a make-before-break response can keep the resources a
    # new state drops until every other type has converged.
    last_resources: Mapping[str, any_pb2.Any] = field(default_factory=dict)
    # The subscription (wildcard, names) last_sent answered: while it and the desired
    # version are unchanged, nothing needs recomputing to know nothing is due.
    sent_for: tuple[bool, frozenset[str]] | None = None
    # The leased resources last wrapped, by (version, names, ttl in ms): a lease re-send
    # reuses them instead of packing every envelope again.
    wrapped: tuple[tuple[str, frozenset[str], int], list[any_pb2.Any]] | None = None

    def wants(self, name: str) -> bool:
        return self.wildcard or name in self.names


@dataclass(frozen=True)
class RequestOutcome:
    type_url: str
    verdict: Verdict
    response: Sent | None = None  # the response this request ACKs or NACKs
    error: str | None = None


@dataclass
class StreamState:
    """Everything one ADS stream remembers; one instance per connected stream."""

    states: dict[str, TypeState] = field(default_factory=dict)
    _nonces: itertools.count = field(default_factory=lambda: itertools.count(1))

    def on_request(self, request: discovery_pb2.DiscoveryRequest) -> RequestOutcome:
        type_url = request.type_url
        state = self.states.get(type_url)
        if state is None:
            state = self.states[type_url] = TypeState()
        names = frozenset(request.resource_names)
        if type_url in types.WILDCARD_TYPES:
            state.wildcard = not names or "*" in names
        state.names = names - {"*"}

        nonce = request.response_nonce
        if not nonce:
            # A new subscription (or Envoy re-sending its last version after a reconnect):
            # it says nothing about what this stream sent.
            return RequestOutcome(type_url, Verdict.INITIAL)
        in_flight = state.in_flight
        if in_flight is None or nonce != in_flight.nonce:
            return RequestOutcome(type_url, Verdict.STALE)
        state.in_flight = None
        if request.HasField("error_detail"):
            return RequestOutcome(type_url, Verdict.NACK, in_flight, request.error_detail.message)
        state.acked = in_flight
        return RequestOutcome(type_url, Verdict.ACK, in_flight)

    def due_responses(
        self, snapshot: Snapshot, now: float
    ) -> list[tuple[discovery_pb2.DiscoveryResponse, Sent]]:
        """The responses to send now, in push order, each already recorded as in flight."""
        out = []
        for type_url in types.PUSH_ORDER:
            state = self.states.get(type_url)
            desired = snapshot.get(type_url)
            if state is None or desired is None or state.in_flight is not None:
                continue
            response = self._response_for(type_url, state, desired, snapshot, now)
            if response is not None:
                out.append(response)
        return out

    def next_heartbeat(self, snapshot: Snapshot) -> float | None:
        """Monotonic time at which a leased type must be re-sent, if any."""
        deadlines = [
            state.last_sent.sent_at + ttl / 3
            for type_url, state in self.states.items()
            if state.last_sent is not None and (ttl := _ttl(snapshot.get(type_url))) is not None
        ]
        return min(deadlines, default=None)

    def _response_for(
        self,
        type_url: str,
        state: TypeState,
        desired: TypeSnapshot,
        snapshot: Snapshot,
        now: float,
    ) -> tuple[discovery_pb2.DiscoveryResponse, Sent] | None:
        last = state.last_sent
        if (
            last is not None
            and last.version == desired.version
            and state.sent_for == (state.wildcard, state.names)
            and not _lease_due(last, desired, now)
        ):
            return None  # the common case, decided without building anything
        selected = {name: res for name, res in desired.resources.items() if state.wants(name)}
        version = desired.version
        if last is not None and type_url in types.WILDCARD_TYPES:
            dropped = last.names - selected.keys()
            if dropped and self._others_converging(type_url, snapshot):
                kept = {name: state.last_resources[name] for name in dropped}
                selected = {**kept, **selected}
                version = desired.version + KEEP_SUFFIX
        names = frozenset(selected)
        unchanged = last is not None and last.version == version and last.names == names
        if unchanged and not _lease_due(last, desired, now):
            return None
        sent = Sent(str(next(self._nonces)), version, desired.generation, names, now)
        state.in_flight = state.last_sent = sent
        state.last_resources = selected
        state.sent_for = (state.wildcard, state.names)
        response = discovery_pb2.DiscoveryResponse(
            version_info=version,
            type_url=type_url,
            nonce=sent.nonce,
            resources=_wrapped(state, selected, version, names, _lease_seconds(desired, now)),
        )
        return response, sent

    def _others_converging(self, type_url: str, snapshot: Snapshot) -> bool:
        for other_url, other in self.states.items():
            if other_url == type_url:
                continue
            if other.in_flight is not None:
                return True
            desired = snapshot.get(other_url)
            if desired is not None and (
                other.last_sent is None or other.last_sent.version != desired.version
            ):
                return True
        return False


def _lease_due(last: Sent | None, desired: TypeSnapshot, now: float) -> bool:
    ttl = desired.ttl_seconds
    return last is not None and ttl is not None and now >= last.sent_at + ttl / 3


def _lease_seconds(desired: TypeSnapshot, now: float) -> float | None:
    """The TTL to send: the configured one, shortened so it ends by `lease_until`."""
    if desired.ttl_seconds is None:
        return None
    if desired.lease_until is None:
        return desired.ttl_seconds
    return max(0.001, min(desired.ttl_seconds, desired.lease_until - now))


def _ttl(desired: TypeSnapshot | None) -> float | None:
    return desired.ttl_seconds if desired is not None else None


def _wrapped(
    state: TypeState,
    selected: Mapping[str, any_pb2.Any],
    version: str,
    names: frozenset[str],
    ttl_seconds: float | None,
) -> list[any_pb2.Any]:
    if ttl_seconds is None:
        return list(selected.values())
    key = (version, names, round(ttl_seconds * 1000))
    if state.wrapped is None or state.wrapped[0] != key:
        state.wrapped = (key, _wrap(selected, version, key[2]))
    return state.wrapped[1]


def _wrap(selected: Mapping[str, any_pb2.Any], version: str, ttl_ms: int) -> list[any_pb2.Any]:
    ttl = duration_pb2.Duration()
    ttl.FromMilliseconds(ttl_ms)
    wrapped = []
    for name, resource in selected.items():
        envelope = any_pb2.Any()
        envelope.Pack(
            discovery_pb2.Resource(name=name, version=version, resource=resource, ttl=ttl)
        )
        wrapped.append(envelope)
    return wrapped
