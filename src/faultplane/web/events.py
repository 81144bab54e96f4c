"""Server-sent events for the live pages, fed by the API's WatchInjections stream.

Subscribe first, then list: the watch is open (its headers arrived) before the snapshot
is read, so no transition between the two is lost. One watch carries every kind the
pages show: transitions, the guard's readings as it records them, and freeze changes
(`kinds`); nothing here polls. Blackouts: the snapshot carries which is in effect and
which begins soon (faultplane.web.calendar); the stream sends `blackouts` again at the
next instant that changes (a timer) and after each scheduling event (one added or
removed), which also goes to the page as `scheduling` (the schedules page re-reads).
The Now and queue pages also get the queue's timeline (ListQueue) in the snapshot and
again after each transition, freeze or scheduling change, which are what move it. A
dropped watch (server stopping, subscriber lagging) ends the response and the
browser's EventSource reconnects, getting a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import UTC, datetime
from typing import Any

import grpc
from aiohttp import web

from faultplane.model.injection import State
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.web.calendar import blackout_state, seconds_until
from faultplane.web.client import ApiRefused
from faultplane.web.context import WebContext, context_of
from faultplane.web.encode import LIVE_STATES, as_json, readings_json
from faultplane.web.sessions import SESSION, Session

GUARDED = {State.PENDING, State.ACTIVE}
KEEPALIVE_SECONDS = 15.0  # a comment line, so a closed tab is noticed and let go
KINDS = (
    pb.INJECTION_EVENT_TRANSITION,
    pb.INJECTION_EVENT_READING,
    pb.INJECTION_EVENT_FREEZE,
    pb.INJECTION_EVENT_SCHEDULING,
)
# ?only=changes (the schedules page): the freeze, the calendar and transitions (a
# schedule's occurrence queued or judged), with no listing and no readings.
CHANGE_KINDS = (
    pb.INJECTION_EVENT_TRANSITION,
    pb.INJECTION_EVENT_FREEZE,
    pb.INJECTION_EVENT_SCHEDULING,
)
Event = pb.InjectionEvent | None  # None: the watch ended


async def stream(request: web.Request) -> web.StreamResponse:
    """GET /events[?id=ID | ?only=changes]: `snapshot`, then `injection`, `readings`,
    `freeze`, `blackouts`, `scheduling` and (all experiments, not one) `queue` events;
    with only=changes, a snapshot of the freeze and blackouts only, and no readings or
    queue."""
    ctx, session = context_of(request), request[SESSION]
    injection_id = request.query.get("id", "")
    changes_only = request.query.get("only") == "changes"
    kinds = CHANGE_KINDS if changes_only else KINDS
    call = ctx.api.watch(pb.WatchInjectionsRequest(id=injection_id, kinds=kinds), session)
    try:
        try:
            await call.initial_metadata()  # subscribed: nothing after this is missed
            if changes_only:
                freeze = await ctx.api.call("GetFreeze", pb.GetFreezeRequest(), session)
                snapshot = {"freeze": as_json(freeze), "server_time": time.time()}
            else:
                snapshot = await _snapshot(ctx, session, injection_id)
            blackouts = Blackouts(ctx, session)
            snapshot["blackouts"] = await blackouts.read()
        except ApiRefused as exc:
            return web.json_response({"error": exc.message}, status=exc.status)
        except grpc.aio.AioRpcError as exc:  # the watch itself was refused or cut
            refused = ApiRefused(exc.code(), exc.details() or "")
            return web.json_response({"error": refused.message}, status=refused.status)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        await _send(response, "snapshot", snapshot)
        with_queue = not (injection_id or changes_only)
        await _pump(ctx, session, call, response, blackouts, with_queue=with_queue)
        return response
    finally:
        call.cancel()


async def queue_rows(ctx: WebContext, session: Session) -> list[dict[str, Any]]:
    """The queue's timeline as ListQueue forecasts it (what starts when)."""
    reply = await ctx.api.call("ListQueue", pb.ListQueueRequest(), session)
    return [as_json(row) for row in reply.rows]


async def _snapshot(ctx: WebContext, session: Session, injection_id: str) -> dict[str, Any]:
    freeze = await ctx.api.call("GetFreeze", pb.GetFreezeRequest(), session)
    snapshot: dict[str, Any] = {"freeze": as_json(freeze), "server_time": time.time()}
    if injection_id:
        one = await ctx.api.call("GetInjection", pb.GetInjectionRequest(id=injection_id), session)
        snapshot["injections"] = [as_json(one)]
        return snapshot
    listed = await ctx.api.call(
        "ListInjections", pb.ListInjectionsRequest(states=LIVE_STATES), session
    )
    injections = [as_json(i) for i in listed.injections]
    # Listed injections carry no readings; each live one's last is in memory already.
    latest = {i.id: i.readings[-1:] for i in ctx.view.list(GUARDED)}
    for injection in injections:
        injection["readings"] = readings_json(latest.get(injection["id"], []))
    snapshot["injections"] = injections
    snapshot["queue"] = await queue_rows(ctx, session)
    return snapshot


class Blackouts:
    """The blackouts as the session's user reads them, and when their state next changes."""

    def __init__(self, ctx: WebContext, session: Session) -> None:
        self._ctx, self._session = ctx, session
        self._listed: list[pb.SchedulingBlackout] = []
        self.changes_at: float | None = None

    async def read(self) -> dict[str, Any]:
        """Re-list them (after a change), then `now()`."""
        reply = await self._ctx.api.call("ListBlackouts", pb.ListBlackoutsRequest(), self._session)
        self._listed = list(reply.blackouts)
        return self.now()

    def due(self, now: float) -> bool:
        """Has the instant the state changes at come?"""
        return self.changes_at is not None and now >= self.changes_at

    def now(self) -> dict[str, Any]:
        """In effect now and coming up, from the last list (the clock moved, nothing else)."""
        state = blackout_state(self._listed, datetime.now(UTC))
        self.changes_at = state.changes_at
        return state.as_json()


async def _pump(
    ctx: WebContext,
    session: Session,
    call: Any,
    response: web.StreamResponse,
    blackouts: Blackouts,
    with_queue: bool,
) -> None:
    queue: asyncio.Queue[Event] = asyncio.Queue()
    reader = asyncio.create_task(_watch(call, queue))
    stale = False  # the queue's timeline moved since it was last sent
    try:
        while True:
            # Checked on every turn, not only on a quiet timeout: a busy stream (readings
            # twice a second) must not hold back a blackout's start or end.
            if blackouts.due(time.time()):
                await _send(response, "blackouts", blackouts.now())  # one began or ended
            wait = seconds_until(blackouts.changes_at, time.time(), KEEPALIVE_SECONDS)
            try:
                event = await asyncio.wait_for(queue.get(), wait)
            except TimeoutError:
                if not blackouts.due(time.time()):
                    await response.write(b": keepalive\n\n")
                continue
            if event is None:
                return
            if event.kind == pb.INJECTION_EVENT_SCHEDULING:
                with contextlib.suppress(ApiRefused):  # refused: the page keeps the last
                    await _send(response, "blackouts", await blackouts.read())
                await _send(response, "scheduling", {})
            else:
                await _send(response, *_page_event(event))
            stale = stale or event.kind != pb.INJECTION_EVENT_READING
            if with_queue and stale and queue.empty():  # once per burst of changes
                stale = False
                # Refused: the next change tries again; the page keeps the last timeline.
                with contextlib.suppress(ApiRefused):
                    await _send(response, "queue", {"rows": await queue_rows(ctx, session)})
    except (ConnectionResetError, ConnectionError):
        return  # the tab closed
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)


def _page_event(event: pb.InjectionEvent) -> tuple[str, dict[str, Any]]:
    """The SSE event name and data the pages read for one watch event."""
    if event.kind == pb.INJECTION_EVENT_READING:
        return "readings", {"id": event.injection_id, "readings": [as_json(event.reading)]}
    if event.kind == pb.INJECTION_EVENT_FREEZE:
        return "freeze", as_json(event.freeze)
    return "injection", as_json(event)


async def _watch(call: Any, queue: asyncio.Queue[Event]) -> None:
    try:
        async for event in call:
            queue.put_nowait(event)
    except grpc.aio.AioRpcError:
        pass  # ended by the server: the browser reconnects and re-lists
    finally:
        queue.put_nowait(None)


async def _send(response: web.StreamResponse, name: str, data: dict[str, Any]) -> None:
    payload = json.dumps(data, separators=(",", ":"))
    await response.write(f"event: {name}\ndata: {payload}\n\n".encode())


__all__ = ["queue_rows", "stream"]
