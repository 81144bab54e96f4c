"""The state-of-the-world protocol of one ADS stream, as a pure state machine.

No sockets here: `on_request` classifies what Envoy said (ACK, NACK, stale, initial) and
`due_responses` says what to send next. Rules it enforces:
- nonces are per stream and per type; a request whose nonce is not the one in flight is
  stale: it may change the subscription but acknowledges nothing;
- at most one response per type is in flight; the next waits for its ACK or NACK;
- a response is sent only when what the sidecar should have differs from what it was
  last sent, and a response the sidecar NACKed is never sent again, not even as a lease
  re-send (the sidecar keeps its old state; only a new desired version is offered);
- types go out in SEND_ORDER, and a wildcard type drops resources only once no other type
  is still converging (make before break). Until then it sends "<version>+keep": the new
  resources plus the dropped ones. A type that is only holding such a keep response does
  not hold up the types after it in SEND_ORDER, so removals happen in reverse push order
  (listeners before the clusters they name) and two dropping types never wait on each
  other forever. An ACK of a keep response does not count as the desired generation;
- leased (TTL) resources are re-sent in full every ttl/3, since Envoy 1.40 does not
  extend a TTL on a body-less heartbeat; never while a response of that type is in flight
  (the answer wakes the stream anyway) and never for a NACKed response;
- an empty `resource_names` on a wildcard type means wildcard only until the stream has
  named resources of that type; after that it unsubscribes from everything (xDS spec).
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from faultplane.xds import types, wire
from faultplane.xds.cache import Snapshot, TypeSnapshot
from faultplane.xds.wire import Response

KEEP_SUFFIX = "+keep"


class Verdict(enum.Enum):
    INITIAL = "initial"  # first request of a type on this stream (or a re-subscription)
    ACK = "ack"
    NACK = "nack"
    STALE = "stale"  # nonce of a response already superseded


@dataclass(frozen=True)
class Sent:
    """One response as sent. `generation` is what its ACK proves the sidecar has: the
    desired generation, except for a make-before-break "+keep" response, which still
    carries resources that generation removed and so proves only what was ACKed before.
    """

    nonce: str
    version: str
    generation: int
    names: frozenset[str]
    sent_at: float


@dataclass
class TypeState:
    wildcard: bool = False
    names: frozenset[str] = frozenset()
    # Whether a request of this type has named resources on this stream: from then on an
    # empty list no longer means wildcard.
    named: bool = False
    in_flight: Sent | None = None
    last_sent: Sent | None = None
    acked: Sent | None = None
    # What last_sent carried, so a make-before-break response can keep the resources a
    # new state drops until every other type has converged.
    last_resources: Mapping[str, any_pb2.Any] = field(default_factory=dict)
    # The subscription (wildcard, names) last_sent answered: while it and the desired
    # version are unchanged, nothing needs recomputing to know nothing is due.
    sent_for: tuple[bool, frozenset[str]] | None = None
    # The leased response last sent, without its nonce, by (version, names, ttl in ms):
    # a lease re-send only appends a new nonce to it.
    unstamped: tuple[tuple[str, frozenset[str], int], bytes] | None = None
    # The (version, names) responses the sidecar NACKed, never to be sent again. Only those
    # of one desired version are kept: a newer desired version makes them unreachable.
    rejected: set[tuple[str, frozenset[str]]] = field(default_factory=set)

    def wants(self, name: str) -> bool:
        return self.wildcard or name in self.names

    def is_rejected(self, version: str, names: frozenset[str]) -> bool:
        return (version, names) in self.rejected

    def reject(self, sent: Sent) -> None:
        base = _base_version(sent.version)
        if any(_base_version(version) != base for version, _ in self.rejected):
            self.rejected.clear()
        self.rejected.add((sent.version, sent.names))


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
            # The legacy wildcard (an empty list) holds only until names were given; later,
            # only "*" asks for everything and an empty list unsubscribes from all.
            state.wildcard = "*" in names or (not names and not state.named)
        state.named = state.named or bool(names)
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
            state.reject(in_flight)
            return RequestOutcome(type_url, Verdict.NACK, in_flight, request.error_detail.message)
        state.acked = in_flight
        return RequestOutcome(type_url, Verdict.ACK, in_flight)

    def due_responses(self, snapshot: Snapshot, now: float) -> list[tuple[Response, Sent]]:
        """The responses to send now, in push order, each already recorded as in flight."""
        out = []
        for type_url in types.SEND_ORDER:
            state = self.states.get(type_url)
            desired = snapshot.get(type_url)
            if state is None or desired is None or state.in_flight is not None:
                continue
            response = self._response_for(type_url, state, desired, snapshot, now)
            if response is not None:
                out.append(response)
        return out

    def next_heartbeat(self, snapshot: Snapshot) -> float | None:
        """Monotonic time at which a leased type must be re-sent, if any.

        Only types that `due_responses` would then really send count: not one in flight
        (its ACK or NACK wakes the stream anyway), nor one whose response would be a NACKed
        one. A deadline already past that sends nothing would wake the stream at once,
        forever.
        """
        deadlines = []
        for type_url, state in self.states.items():
            desired = snapshot.get(type_url)
            last = state.last_sent
            if desired is None or desired.ttl_seconds is None or last is None:
                continue
            if state.in_flight is not None:
                continue
            due = last.sent_at + desired.ttl_seconds / 3
            if desired.lease_until is not None and due >= desired.lease_until:
                continue  # the lease is over: nothing is renewed past it
            if not state.rejected:  # the common case: nothing NACKed, nothing to plan
                deadlines.append(due)
                continue
            selected, version, _ = self._plan(type_url, state, desired, snapshot)
            if not state.is_rejected(version, frozenset(selected)):
                deadlines.append(due)
        return min(deadlines, default=None)

    def _response_for(
        self,
        type_url: str,
        state: TypeState,
        desired: TypeSnapshot,
        snapshot: Snapshot,
        now: float,
    ) -> tuple[Response, Sent] | None:
        last = state.last_sent
        if (
            last is not None
            and last.version == desired.version
            and state.sent_for == (state.wildcard, state.names)
            and not _lease_due(last, desired, now)
        ):
            return None  # the common case, decided without building anything
        selected, version, generation = self._plan(type_url, state, desired, snapshot)
        names = frozenset(selected)
        if state.is_rejected(version, names):
            return None
        unchanged = last is not None and last.version == version and last.names == names
        if unchanged and not _lease_due(last, desired, now):
            return None
        sent = Sent(str(next(self._nonces)), version, generation, names, now)
        state.in_flight = state.last_sent = sent
        state.last_resources = selected
        state.sent_for = (state.wildcard, state.names)
        lease = _lease_seconds(desired, now)
        if lease is None:  # sent again only when it changes: nothing worth keeping
            body = wire.unstamped(type_url, version, list(selected.items()), None)
            return wire.stamped(type_url, version, sent.nonce, body), sent
        key = (version, names, round(lease * 1000))
        if state.unstamped is None or state.unstamped[0] != key:
            body = wire.unstamped(type_url, version, list(selected.items()), key[2])
            state.unstamped = (key, body)
        return wire.stamped(type_url, version, sent.nonce, state.unstamped[1]), sent

    def _plan(
        self, type_url: str, state: TypeState, desired: TypeSnapshot, snapshot: Snapshot
    ) -> tuple[dict[str, any_pb2.Any], str, int]:
        """What to send for `type_url` now: the resources, the version and the generation
        its ACK proves. Decides nothing else and changes nothing."""
        selected = {name: res for name, res in desired.resources.items() if state.wants(name)}
        last = state.last_sent
        if last is not None and type_url in types.WILDCARD_TYPES:
            dropped = last.names - selected.keys()
            if dropped and self._others_converging(type_url, snapshot):
                kept = {name: state.last_resources[name] for name in dropped}
                # Its ACK proves no more than what was ACKed before: the dropped resources
                # are still there, so waiters for this generation must wait for the plain one.
                acked = state.acked.generation if state.acked is not None else 0
                return {**kept, **selected}, desired.version + KEEP_SUFFIX, acked
        return selected, desired.version, desired.generation

    def _others_converging(self, type_url: str, snapshot: Snapshot) -> bool:
        """Whether another type has yet to reach its desired version, so `type_url` must
        keep what it would drop.

        A type earlier in SEND_ORDER whose keep response for its desired version is ACKed
        is waiting only for others to converge: it does not count, else two dropping types
        would each keep, waiting for the other, forever. The later type drops first.
        """
        rank = _PUSH_RANK.get(type_url, len(_PUSH_RANK))
        for other_url, other in self.states.items():
            if other_url == type_url:
                continue
            if other.in_flight is not None:
                return True
            desired = snapshot.get(other_url)
            if desired is None:
                continue
            last = other.last_sent
            if last is None:
                return True
            if last.version == desired.version:
                continue
            only_keeping = last.version == desired.version + KEEP_SUFFIX and other.acked is last
            if only_keeping and _PUSH_RANK.get(other_url, len(_PUSH_RANK)) < rank:
                continue
            return True
        return False


_PUSH_RANK = {type_url: rank for rank, type_url in enumerate(types.SEND_ORDER)}


def _base_version(version: str) -> str:
    return version.removesuffix(KEEP_SUFFIX)


def _lease_due(last: Sent | None, desired: TypeSnapshot, now: float) -> bool:
    """A leased response is re-sent every third of its TTL, and never once its lease is
    over (a 1 ms TTL would switch the fault on again for that millisecond)."""
    ttl = desired.ttl_seconds
    if last is None or ttl is None:
        return False
    if desired.lease_until is not None and now >= desired.lease_until:
        return False
    return now >= last.sent_at + ttl / 3


def _lease_seconds(desired: TypeSnapshot, now: float) -> float | None:
    """The TTL to send: the configured one, shortened so it ends by `lease_until`."""
    if desired.ttl_seconds is None:
        return None
    if desired.lease_until is None:
        return desired.ttl_seconds
    return max(0.001, min(desired.ttl_seconds, desired.lease_until - now))
