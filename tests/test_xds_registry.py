"""ACK/NACK evidence is attributed to the change that caused it (issue 9, item 5).

Two injections on one sidecar: A's change is generation 1, B's generation 2, and the
stream sends them coalesced as one response carrying generation 2.
"""

from __future__ import annotations

import asyncio

import pytest
from envoy.config.core.v3 import base_pb2

from faultplane.xds import types
from faultplane.xds.registry import AckOutcome, AckTimeout, SidecarRegistry
from faultplane.xds.stream import Sent

NODE = "node-1"
RTDS = types.RUNTIME


def sent(generation: int) -> Sent:
    return Sent(str(generation), f"test-{generation}", generation, frozenset({"layer"}), 0.0)


def connected() -> SidecarRegistry:
    registry = SidecarRegistry()
    registry.connected(base_pb2.Node(id=NODE))
    return registry


async def waiting(
    registry: SidecarRegistry, generation: int, timeout: float = 10.0
) -> asyncio.Task[AckOutcome]:
    task = asyncio.create_task(registry.wait_for(NODE, RTDS, generation, timeout))
    await asyncio.sleep(0)  # one turn of the loop: the waiter registers
    return task


async def test_a_nack_of_a_combined_response_fails_only_the_change_it_answered() -> None:
    registry = connected()
    a = await waiting(registry, 1)
    b = await waiting(registry, 2)

    registry.record_nack(NODE, RTDS, sent(2), "B is bad", now=0.0)
    await asyncio.sleep(0)  # had the NACK resolved A, A would be done now

    assert await b == AckOutcome(False, "test-2", "B is bad")
    assert not a.done()
    # B is withdrawn: generation 3 carries A's change without B's, and is ACKed.
    registry.record_ack(NODE, RTDS, sent(3), now=0.0)
    assert await a == AckOutcome(True, "test-3")


async def test_an_ack_of_a_later_generation_still_resolves_an_earlier_one() -> None:
    registry = connected()
    a = await waiting(registry, 1)

    registry.record_ack(NODE, RTDS, sent(2), now=0.0)

    assert await a == AckOutcome(True, "test-2")


async def test_a_timeout_after_a_later_nack_says_so() -> None:
    registry = connected()
    a = await waiting(registry, 1, timeout=0.05)

    registry.record_nack(NODE, RTDS, sent(2), "B is bad", now=0.0)

    with pytest.raises(AckTimeout) as raised:
        await a
    assert isinstance(raised.value, TimeoutError)  # callers catching TimeoutError still work
    assert raised.value.later_nack == AckOutcome(False, "test-2", "B is bad")
    assert "test-2" in str(raised.value) and "B is bad" in str(raised.value)


async def test_a_plain_timeout_says_nothing_was_nacked() -> None:
    registry = connected()

    with pytest.raises(AckTimeout) as raised:
        await registry.wait_for(NODE, RTDS, 1, timeout=0.01)

    assert raised.value.later_nack is None
    assert str(raised.value) == "no ACK of generation 1"


async def test_waiting_for_a_generation_already_nacked_answers_at_once() -> None:
    registry = connected()
    registry.record_nack(NODE, RTDS, sent(2), "B is bad", now=0.0)

    outcome = await registry.wait_for(NODE, RTDS, 2, timeout=10.0)

    assert outcome == AckOutcome(False, "test-2", "B is bad")


async def test_one_wait_for_many_sidecars_answers_each_in_order_and_times_out_the_silent() -> None:
    """A fleet-wide push waits once (one future, one timer), not once per sidecar; each
    sidecar still gets its own answer, and one that never answers gets a timeout value
    without holding up or failing the others."""
    registry = SidecarRegistry()
    for node in ("a", "b", "c"):
        registry.connected(base_pb2.Node(id=node), peer=node)
    registry.record_ack("c", RTDS, sent(1), now=0.0)  # c already has generation 1
    waits = [("a", 1), ("b", 2), ("c", 1)]
    task = asyncio.create_task(registry.wait_many(waits, RTDS, timeout=0.2))
    await asyncio.sleep(0)

    registry.record_ack("a", RTDS, sent(1), now=0.0)
    registry.record_nack("b", RTDS, sent(3), "later is bad", now=0.0)  # not b's generation

    a, b, c = await task
    assert a == AckOutcome(True, "test-1")
    assert isinstance(b, AckTimeout) and b.later_nack == AckOutcome(False, "test-3", "later is bad")
    assert c == AckOutcome(True, "test-1")
    assert not registry._waiters  # nothing left behind for the next push
