"""Webhook delivery against a real aiohttp receiver on loopback, without a mesh.

`Receiver` is the test's webhook: it can be up (200), failing (a status), hanging, or
down (not listening at all), and records every body it answered. The live tests
(tests/test_notify_live.py) use it too.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from faultplane.demo.ports import free_port
from faultplane.notify.courier import Courier, DeliveryPolicy
from faultplane.notify.events import Event, freeze_event
from faultplane.notify.formats import slack_body
from faultplane.notify.targets import NotifyTarget, parse_target, parse_web_url
from faultplane.observability import metrics
from tests.helpers import run_cli, until

FAST = DeliveryPolicy(attempts=4, first_delay=0.05, max_delay=0.2, timeout=2.0, queue=3)


class Receiver:
    """A webhook on 127.0.0.1:`port`. `status` answers every POST (200: accepted);
    `hang` holds requests open until released; `down()` stops listening."""

    def __init__(self) -> None:
        self.port = free_port()
        self.bodies: list[dict[str, Any]] = []
        self.attempts = 0
        self.status = 200
        self.hanging = 0  # requests being held open now
        self._release: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def events(self) -> list[str]:
        return [body.get("event", "slack") for body in self.bodies]

    def hang(self) -> None:
        self._release = asyncio.Event()

    def release(self) -> None:
        if self._release is not None:
            self._release.set()
            self._release = None

    async def _hook(self, request: web.Request) -> web.Response:
        self.attempts += 1
        body = await request.json()
        release = self._release
        if release is not None:
            self.hanging += 1
            try:
                await release.wait()
            finally:
                self.hanging -= 1
        if self.status == 200:
            self.bodies.append(body)
        return web.Response(status=self.status)

    async def up(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def down(self) -> None:
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    await hook.up()
    try:
        yield hook
    finally:
        await hook.down()


class AuditLog:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    async def __call__(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)


def event(injection_id: str) -> Event:
    return Event(kind="started", at=1.0, injection_id=injection_id, owner="ananya",
                 services=("payments-api",), targets=("payments-api-1",),
                 faults=("latency 200ms on 100% of payments-api inbound",),
                 ends_at=240.0, reason="every target ACKed",
                 link="http://127.0.0.1:8080/experiments/" + injection_id)  # fmt: skip


async def run_courier(target: NotifyTarget, audit: AuditLog, policy: DeliveryPolicy = FAST):
    session = aiohttp.ClientSession()
    courier = Courier(target, session, audit, policy)
    task = asyncio.create_task(courier.run())
    return courier, task, session


async def stop_courier(task: asyncio.Task[None], session: aiohttp.ClientSession) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await session.close()


async def test_a_receiver_down_for_a_while_gets_every_event_in_order_by_retries(
    receiver: Receiver,
) -> None:
    await receiver.down()
    audit = AuditLog()
    retried = metrics.NOTIFICATIONS.labels("retried")._value.get()
    policy = DeliveryPolicy(attempts=20, first_delay=0.05, max_delay=0.2, timeout=2.0)
    courier, task, session = await run_courier(NotifyTarget(receiver.url), audit, policy)
    try:
        courier.offer(event("inj-1"))
        courier.offer(event("inj-2"))
        await until(lambda: metrics.NOTIFICATIONS.labels("retried")._value.get() >= retried + 2,
                    10, "attempts to fail while the receiver is down")  # fmt: skip
        assert receiver.bodies == []
        await receiver.up()
        await until(lambda: len(receiver.bodies) == 2, 10, "both events delivered")
        assert [b["injection_id"] for b in receiver.bodies] == ["inj-1", "inj-2"]
        assert audit.entries == []
    finally:
        await stop_courier(task, session)


async def test_an_event_no_attempt_delivers_is_audited_and_counted(receiver: Receiver) -> None:
    receiver.status = 500
    audit = AuditLog()
    failed = metrics.NOTIFICATIONS.labels("failed")._value.get()
    courier, task, session = await run_courier(NotifyTarget(receiver.url), audit)
    try:
        courier.offer(event("inj-9"))
        await until(lambda: bool(audit.entries), 10, "the failure to be audited")
    finally:
        await stop_courier(task, session)
    assert receiver.attempts == FAST.attempts
    (entry,) = audit.entries
    assert entry["kind"] == "notification" and entry["outcome"] == "FAILED"
    assert entry["injection_id"] == "inj-9" and entry["method"] == "notify.started"
    assert "HTTP 500" in entry["detail"]
    assert entry["peer"] == f"json http://127.0.0.1:{receiver.port}"  # never the path
    assert metrics.NOTIFICATIONS.labels("failed")._value.get() == failed + 1


async def test_a_full_queue_drops_its_oldest_without_blocking_and_audits_it(
    receiver: Receiver,
) -> None:
    receiver.hang()
    audit = AuditLog()
    courier, task, session = await run_courier(NotifyTarget(receiver.url), audit)
    try:
        courier.offer(event("inj-0"))
        await until(lambda: receiver.hanging == 1, 10, "the first event to be in flight")
        for n in range(1, 5):  # queue of 3: inj-1 is dropped for inj-4
            courier.offer(event(f"inj-{n}"))
        await until(lambda: bool(audit.entries), 5, "the drop to be audited")
        assert [(e["outcome"], e["injection_id"]) for e in audit.entries] == [("DROPPED", "inj-1")]
        receiver.release()
        await until(lambda: len(receiver.bodies) == 4, 10, "the rest delivered")
    finally:
        await stop_courier(task, session)
    assert [b["injection_id"] for b in receiver.bodies] == ["inj-0", "inj-2", "inj-3", "inj-4"]


async def test_slack_target_gets_text_and_a_block_naming_what_who_where_and_when(
    receiver: Receiver,
) -> None:
    audit = AuditLog()
    target = parse_target("slack+" + receiver.url)
    courier, task, session = await run_courier(target, audit)
    try:
        courier.offer(event("inj-5"))
        await until(lambda: len(receiver.bodies) == 1, 10, "the Slack message")
    finally:
        await stop_courier(task, session)
    (body,) = receiver.bodies
    assert set(body) == {"text", "blocks"}
    text = body["text"]
    for words in ("inj-5 owned by ananya", "latency 200ms", "payments-api-1",
                  "Scheduled end: 1970-01-01T00:04:00Z",
                  "http://127.0.0.1:8080/experiments/inj-5"):  # fmt: skip
        assert words in text
    assert body["blocks"][0]["text"]["type"] == "mrkdwn"


def test_freeze_message_says_who_and_until() -> None:
    body = slack_body(freeze_event(True, "ananya", "INC-7", 3600.0, "http://dash/"))
    assert "frozen by ananya" in body["text"] and "INC-7" in body["text"]
    assert "Until: 1970-01-01T01:00:00Z" in body["text"] and "http://dash" in body["text"]
    json.dumps(body)  # serialisable as sent


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("ftp://host/x", "must be an http:// or https:// URL"),
        ("slack+file:///etc/passwd", "must be an http:// or https:// URL"),
        ("https:///nohost", "has no host"),
        ("http://host:99999/x", "Port out of range"),
    ],
)
def test_a_notify_url_that_cannot_work_is_refused_naming_why(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_target(text)


def test_targets_and_web_url_parse() -> None:
    assert parse_target("https://h/x") == NotifyTarget("https://h/x", "json")
    assert parse_target("slack+https://hooks.example/T/B/secret").format == "slack"
    assert parse_target("slack+https://hooks.example/T/B/secret").name == (
        "slack https://hooks.example"
    )
    assert parse_web_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    with pytest.raises(ValueError, match="no query"):
        parse_web_url("http://h/?a=1")


async def test_at_a_stop_undelivered_events_are_audited_as_dropped(receiver: Receiver) -> None:
    receiver.hang()
    audit = AuditLog()
    courier, task, session = await run_courier(NotifyTarget(receiver.url), audit)
    courier.offer(event("inj-a"))
    await until(lambda: receiver.hanging == 1, 10, "the first event in flight")
    courier.offer(event("inj-b"))
    await stop_courier(task, session)

    assert courier.abandon() == 2
    await courier.settle(5)
    assert [(e["outcome"], e["injection_id"]) for e in audit.entries] == [
        ("DROPPED", "inj-a"), ("DROPPED", "inj-b"),
    ]  # fmt: skip


async def test_serve_refuses_a_notify_url_it_could_never_deliver_to() -> None:
    code, _, err = await run_cli("serve", "--notify", "slack+ftp://hooks.example/x")
    assert code == 2
    assert "argument --notify: 'ftp://hooks.example/x': must be an http:// or https://" in err
