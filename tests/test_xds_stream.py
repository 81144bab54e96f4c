"""The ADS stream state machine on its own: leases, NACKs, make-before-break, subscriptions.

Pure: a test plays Envoy by feeding `on_request` and reading `due_responses`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from faultplane.xds import types
from faultplane.xds.cache import Snapshot, TypeSnapshot
from faultplane.xds.registry import SidecarRegistry
from faultplane.xds.stream import KEEP_SUFFIX, Sent, StreamState, Verdict

Response = discovery_pb2.DiscoveryResponse
NODE = "node-1"


def packed(name: str, content: str = "") -> any_pb2.Any:
    """A stand-in resource: the stream never looks inside one."""
    value = f"{name}|{content}".encode()
    return any_pb2.Any(type_url="type.googleapis.com/test.Resource", value=value)


def desired(
    generation: int, names: Iterable[str], ttl: float | None = None, content: str = ""
) -> TypeSnapshot:
    return TypeSnapshot(
        version=f"test-{generation}",
        generation=generation,
        resources={name: packed(name, content) for name in names},
        ttl_seconds=ttl,
    )


def request(
    type_url: str,
    names: Iterable[str] = (),
    answering: Response | None = None,
    error: str | None = None,
) -> discovery_pb2.DiscoveryRequest:
    message = discovery_pb2.DiscoveryRequest(
        type_url=type_url,
        resource_names=list(names),
        version_info=answering.version_info if answering is not None else "",
        response_nonce=answering.nonce if answering is not None else "",
    )
    if error is not None:
        message.error_detail.message = error
    return message


def resource_names(response: Response) -> set[str]:
    return {any_.value.decode().split("|")[0] for any_ in response.resources}


def subscribed(snapshot: Snapshot, names: dict[str, tuple[str, ...]]) -> StreamState:
    """A stream that subscribed to `names` per type and ACKed the first responses."""
    stream = StreamState()
    for type_url, wanted in names.items():
        stream.on_request(request(type_url, wanted))
    for response, _ in stream.due_responses(snapshot, now=0.0):
        stream.on_request(request(response.type_url, names[response.type_url], response))
    return stream


# Item 7: a NACKed leased response is never re-sent.


def test_a_nacked_leased_response_is_never_resent_nor_scheduled() -> None:
    stream = StreamState()
    stream.on_request(request(types.RUNTIME, ["faultplane"]))
    leased = {types.RUNTIME: desired(1, ["faultplane"], ttl=3.0)}
    [(response, _)] = stream.due_responses(leased, now=0.0)

    outcome = stream.on_request(request(types.RUNTIME, ["faultplane"], response, "bad layer"))

    assert outcome.verdict is Verdict.NACK
    for now in (1.0, 2.0, 10.0, 1000.0):  # far past every ttl/3
        assert stream.due_responses(leased, now) == []
    assert stream.next_heartbeat(leased) is None  # nothing to wake the stream for
    # The next desired version is offered: a NACK blocks only the rejected content.
    newer = {types.RUNTIME: desired(2, ["faultplane"], ttl=3.0)}
    [(fixed, _)] = stream.due_responses(newer, now=1001.0)
    assert fixed.version_info == "test-2"


def test_an_acked_leased_response_is_resent_every_third_of_its_ttl() -> None:
    """The contrast to the NACK case: the lease itself still works."""
    stream = StreamState()
    stream.on_request(request(types.RUNTIME, ["faultplane"]))
    leased = {types.RUNTIME: desired(1, ["faultplane"], ttl=3.0)}
    [(response, _)] = stream.due_responses(leased, now=0.0)
    stream.on_request(request(types.RUNTIME, ["faultplane"], response))

    assert stream.next_heartbeat(leased) == 1.0
    assert stream.due_responses(leased, now=0.9) == []
    [(again, _)] = stream.due_responses(leased, now=1.0)
    assert again.version_info == response.version_info and again.nonce != response.nonce


# Item 6: no heartbeat deadline while a leased response is in flight.


def test_no_heartbeat_is_due_while_a_leased_response_is_unanswered() -> None:
    stream = StreamState()
    stream.on_request(request(types.RUNTIME, ["faultplane"]))
    leased = {types.RUNTIME: desired(1, ["faultplane"], ttl=3.0)}
    [(response, _)] = stream.due_responses(leased, now=0.0)

    # Long past ttl/3 with no answer: nothing can be sent, so nothing must be scheduled.
    assert stream.due_responses(leased, now=5.0) == []
    assert stream.next_heartbeat(leased) is None

    stream.on_request(request(types.RUNTIME, ["faultplane"], response))
    assert stream.next_heartbeat(leased) == 1.0  # the overdue re-send, at once


def test_a_heartbeat_deadline_always_sends_something() -> None:
    """A deadline at which nothing would be sent wakes the stream at once, forever: here
    the subscription moved back to a selection that was NACKed, while the last response
    sent (and ACKed) was a different one."""
    leased = {types.RUNTIME: desired(1, ["faultplane", "extra"], ttl=3.0)}
    both, one = ("faultplane", "extra"), ("faultplane",)
    stream = StreamState()
    stream.on_request(request(types.RUNTIME, both))
    [(rejected, _)] = stream.due_responses(leased, now=0.0)
    stream.on_request(request(types.RUNTIME, one, rejected, error="bad extra"))
    [(narrow, _)] = stream.due_responses(leased, now=0.0)
    stream.on_request(request(types.RUNTIME, one, narrow))  # ACKed
    stream.on_request(request(types.RUNTIME, both, narrow))  # stale: asks for both again

    deadline = stream.next_heartbeat(leased)

    assert deadline is None or stream.due_responses(leased, now=deadline) != []


# Item 10a: two wildcard types that both drop resources converge.


def test_two_wildcard_types_dropping_resources_converge() -> None:
    before = {
        types.CLUSTER: desired(1, ["app", "old-cluster"]),
        types.LISTENER: desired(2, ["ingress", "old-listener"]),
    }
    stream = subscribed(before, {types.CLUSTER: (), types.LISTENER: ()})
    after = {
        types.CLUSTER: desired(3, ["app"]),
        types.LISTENER: desired(4, ["ingress"]),
    }

    sent: list[tuple[str, str]] = []
    for _round in range(10):
        due = stream.due_responses(after, now=1.0)
        if not due:
            break
        for response, _ in due:
            sent.append((types.short_name(response.type_url), response.version_info))
            stream.on_request(request(response.type_url, (), response))

    plain = {types.CLUSTER: "test-3", types.LISTENER: "test-4"}
    assert {url: stream.states[url].last_sent.version for url in plain} == plain, sent
    assert stream.due_responses(after, now=1.0) == []
    # Make before break, then removals in reverse push order: listeners before clusters.
    assert sent == [
        ("cds", "test-3" + KEEP_SUFFIX),
        ("lds", "test-4" + KEEP_SUFFIX),
        ("lds", "test-4"),
        ("cds", "test-3"),
    ]


# Item 10b: an empty list after named resources unsubscribes; it is not a wildcard.


def test_an_empty_list_after_named_resources_unsubscribes() -> None:
    snapshot = {types.CLUSTER: desired(1, ["a", "b"])}
    stream = StreamState()
    stream.on_request(request(types.CLUSTER, ["a"]))
    [(first, _)] = stream.due_responses(snapshot, now=0.0)
    assert resource_names(first) == {"a"}

    stream.on_request(request(types.CLUSTER, [], first))

    [(emptied, _)] = stream.due_responses(snapshot, now=0.0)
    assert resource_names(emptied) == set()
    # "*" asks for everything again.
    stream.on_request(request(types.CLUSTER, ["*"], emptied))
    [(everything, _)] = stream.due_responses(snapshot, now=0.0)
    assert resource_names(everything) == {"a", "b"}


def test_an_empty_list_from_the_start_stays_a_wildcard() -> None:
    snapshot = {types.CLUSTER: desired(1, ["a", "b"])}
    stream = StreamState()
    stream.on_request(request(types.CLUSTER))
    [(first, _)] = stream.due_responses(snapshot, now=0.0)
    assert resource_names(first) == {"a", "b"}

    stream.on_request(request(types.CLUSTER, [], first))  # Envoy's ACK repeats the empty list

    assert stream.due_responses(snapshot, now=0.0) == []
    assert stream.states[types.CLUSTER].wildcard


# Item 10c: the ACK of a "+keep" response is not the desired generation's evidence.


async def test_the_ack_of_a_keep_response_does_not_resolve_the_desired_generation() -> None:
    before = {types.CLUSTER: desired(1, ["app", "ledger"]), types.ROUTE: desired(2, ["egress"])}
    stream = subscribed(before, {types.CLUSTER: (), types.ROUTE: ("egress",)})
    registry = SidecarRegistry()
    registry.connected(base_pb2.Node(id=NODE))
    after = {
        types.CLUSTER: desired(3, ["app"]),
        types.ROUTE: desired(4, ["egress"], content="-no-ledger"),
    }
    waiter = asyncio.create_task(registry.wait_for(NODE, types.CLUSTER, 3, timeout=10))
    await asyncio.sleep(0)  # one turn of the loop: the waiter registers

    (keep, keep_sent), (routes, _) = stream.due_responses(after, now=1.0)
    assert keep.version_info == "test-3" + KEEP_SUFFIX
    assert "ledger" in resource_names(keep)
    _ack(stream, registry, keep, ())
    await asyncio.sleep(0)  # had the ACK resolved it, the waiter would be done now

    assert keep_sent.generation < 3
    assert registry.get(NODE).status(types.CLUSTER).acked_generation < 3
    assert not waiter.done()

    _ack(stream, registry, routes, ("egress",))
    [(final, _)] = stream.due_responses(after, now=1.0)
    assert final.version_info == "test-3" and "ledger" not in resource_names(final)
    _ack(stream, registry, final, ())
    outcome = await waiter
    assert outcome.acked and outcome.version == "test-3"


def _ack(
    stream: StreamState, registry: SidecarRegistry, response: Response, names: tuple[str, ...]
) -> None:
    """Envoy ACKs; the server records it, as server.py does."""
    outcome = stream.on_request(request(response.type_url, names, response))
    assert outcome.verdict is Verdict.ACK and isinstance(outcome.response, Sent)
    registry.record_ack(NODE, response.type_url, outcome.response, now=1.0)


# Item 10d: EDS for a cluster CDS just added reaches Envoy.


def test_endpoints_of_a_new_cluster_follow_the_resubscription() -> None:
    """The EDS response computed with the CDS change predates Envoy's subscription to the
    new cluster, so it lacks it; the re-subscription must bring the endpoints anyway.

    Envoy asks for the new cluster's endpoints after processing CDS, carrying the nonce of
    the EDS response it last processed: the one before, superseded (a stale request).
    """
    before = {types.CLUSTER: desired(1, ["a"]), types.ENDPOINT: desired(2, ["a"])}
    stream = subscribed(before, {types.CLUSTER: (), types.ENDPOINT: ("a",)})
    old_eds = stream.states[types.ENDPOINT].acked
    assert old_eds is not None
    after = {types.CLUSTER: desired(3, ["a", "z"]), types.ENDPOINT: desired(4, ["a", "z"])}

    (cds, _), (eds, _) = stream.due_responses(after, now=1.0)
    assert resource_names(cds) == {"a", "z"}
    assert resource_names(eds) == {"a"}  # filtered by the subscription as it was

    superseded = Response(type_url=types.ENDPOINT, version_info="test-2", nonce=old_eds.nonce)
    outcome = stream.on_request(request(types.ENDPOINT, ("a", "z"), superseded))
    assert outcome.verdict is Verdict.STALE
    stream.on_request(request(types.CLUSTER, (), cds))
    assert stream.due_responses(after, now=1.0) == []  # EDS still in flight

    stream.on_request(request(types.ENDPOINT, ("a", "z"), eds))

    [(endpoints, _)] = stream.due_responses(after, now=1.0)
    assert endpoints.type_url == types.ENDPOINT and resource_names(endpoints) == {"a", "z"}


def test_endpoints_of_a_new_cluster_are_sent_even_if_the_previous_eds_was_nacked() -> None:
    """A rejected response is never re-sent, but the same version for a new subscription
    is a different response: refusing it would leave the new cluster without endpoints."""
    before = {types.CLUSTER: desired(1, ["a"]), types.ENDPOINT: desired(2, ["a"])}
    stream = subscribed(before, {types.CLUSTER: (), types.ENDPOINT: ("a",)})
    after = {types.CLUSTER: desired(3, ["a", "z"]), types.ENDPOINT: desired(4, ["a", "z"])}
    (cds, _), (eds, _) = stream.due_responses(after, now=1.0)
    stream.on_request(request(types.CLUSTER, (), cds))

    stream.on_request(request(types.ENDPOINT, ("a", "z"), eds, error="bad endpoint"))

    [(endpoints, _)] = stream.due_responses(after, now=1.0)
    assert resource_names(endpoints) == {"a", "z"}
    # ... and the rejected one itself, were Envoy to narrow back, is not sent again.
    stream.on_request(request(types.ENDPOINT, ("a",), endpoints))
    assert stream.due_responses(after, now=1.0) == []
