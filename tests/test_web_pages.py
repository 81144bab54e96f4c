"""The dashboard's server side over real HTTP, against a real control server whose fake
sidecars ACK over real ADS (no browser, no Envoy): the event stream's queue (a queued
experiment in the snapshot with why it waits, and the timeline sent again after a
change), the audit pages (older, newer, latest, with the chain's status), and the
history filters.
"""

# ruff: noqa: F811 (`start` is a fixture imported from test_governance)
from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import aiohttp

from faultplane.v1 import faultplane_pb2 as pb
from tests.helpers import wait_state
from tests.test_governance import Start, _As, request_by, start  # noqa: F401
from tests.test_web_auth import browser, dashboard, log_in

PAGE_SIZE = 100  # faultplane.web.audit.PAGE_SIZE
SEQ = re.compile(r"<tr>\s*<td>(\d+)</td>")


async def events(session: aiohttp.ClientSession, url: str) -> AsyncIterator[tuple[str, dict]]:
    """The stream's server-sent events, as (name, data), until the caller stops."""
    async with session.get(url) as reply:
        assert reply.headers["Content-Type"].startswith("text/event-stream")
        name, data = "", ""
        async for line in reply.content:
            text = line.decode().rstrip("\n")
            if text.startswith("event: "):
                name = text.removeprefix("event: ")
            elif text.startswith("data: "):
                data = text.removeprefix("data: ")
            elif not text and name:
                yield name, json.loads(data)
                name = ""


async def test_the_stream_carries_queued_experiments_and_the_queue_after_each_change(
    start: Start,
) -> None:
    api, base = await dashboard(start)
    first = await api.call("CreateInjection", request_by("alice", duration_seconds=600), "alice")
    await wait_state(_As(api, "alice"), first.id, {pb.ACTIVE})
    queued_request = request_by("alice", duration_seconds=60, on_conflict="ON_CONFLICT_QUEUE")
    second = await api.call("CreateInjection", queued_request, "alice")
    assert second.state == pb.QUEUED
    async with browser() as session:
        await log_in(session, base, api.tokens["vic"])
        stream = events(session, f"{base}/events")
        name, snapshot = await anext(stream)
        assert name == "snapshot"
        by_id = {i["id"]: i for i in snapshot["injections"]}
        assert by_id[second.id]["state"] == "QUEUED"
        assert first.id in by_id[second.id]["waiting_reason"]
        rows = {r["injection_id"]: r for r in snapshot["queue"]}
        assert rows[first.id]["status"] == "running" and rows[second.id]["status"] == "starts"
        assert rows[second.id]["start"][:19] == by_id[first.id]["ends_at"][:19]  # first ends

        await api.call("AbortInjection", pb.AbortInjectionRequest(id=first.id), "alice")
        async for name, data in stream:  # the first's end, the second's start, the queue
            if name == "queue" and data["rows"] and data["rows"][0]["injection_id"] == second.id:
                assert [r["status"] for r in data["rows"]] == ["running"]
                break
        await stream.aclose()
    await api.call("AbortInjection", pb.AbortInjectionRequest(id=second.id), "alice")


async def test_audit_pages_move_older_newer_and_to_the_latest_with_the_chain_status(
    start: Start,
) -> None:
    api, base = await dashboard(start)
    for _ in range(PAGE_SIZE + 30):  # each call is an audit entry
        await api.call("GetFreeze", pb.GetFreezeRequest(), "vic")
    async with browser() as session:
        await log_in(session, base, api.tokens["vic"])
        async with session.get(f"{base}/audit?hours=0") as reply:
            first_page = await reply.text()
        assert "Chain verified" in first_page
        seqs = [int(s) for s in SEQ.findall(first_page)]
        assert seqs == list(range(1, PAGE_SIZE + 1))  # the beginning, oldest first
        latest = re.search(r'href="([^"]+)">Latest', first_page)
        assert latest is not None and "Older" not in first_page
        async with session.get(base + "/audit" + latest.group(1).replace("&amp;", "&")) as reply:
            last_page = await reply.text()
        last = [int(s) for s in SEQ.findall(last_page)]
        # The last PAGE_SIZE entries when it was linked (reading the audit is audited
        # too, so by now a few newer ones follow: the pages' own calls).
        assert len(last) == PAGE_SIZE and last[-1] > PAGE_SIZE + 30
        older = re.search(r'href="([^"]+)" rel="prev"', last_page)
        assert older is not None
        async with session.get(base + "/audit" + older.group(1).replace("&amp;", "&")) as reply:
            before = [int(s) for s in SEQ.findall(await reply.text())]
        assert before[-1] == last[0] - 1 and before == list(range(before[0], last[0]))


async def test_history_filters_by_owner_and_verdict(start: Start) -> None:
    """Fake sidecars serve no stats, so neither can be "held": both end inconclusive."""
    api, base = await dashboard(start)
    short = await api.call("CreateInjection", request_by("alice", duration_seconds=1), "alice")
    await wait_state(_As(api, "alice"), short.id, {pb.COMPLETED})
    mine = await api.call("CreateInjection", request_by("root", duration_seconds=600), "root")
    await api.call("AbortInjection", pb.AbortInjectionRequest(id=mine.id), "root")
    async with browser() as session:
        await log_in(session, base, api.tokens["vic"])
        async with session.get(f"{base}/history?owner=alice") as reply:
            by_alice = await reply.text()
        async with session.get(f"{base}/history?verdict=held") as reply:
            held = await reply.text()
        async with session.get(f"{base}/history?verdict=inconclusive&owner=root") as reply:
            inconclusive = await reply.text()
        async with session.get(f"{base}/history?verdict=maybe") as reply:
            assert reply.status == 400 and "verdict: must be one of" in await reply.text()
    assert short.id in by_alice and mine.id not in by_alice
    assert short.id not in held and mine.id not in held and "Nothing matches" in held
    assert mine.id in inconclusive and short.id not in inconclusive
