"""Server-sent events for the live pages, fed by the API's WatchInjections stream.

Subscribe first, then list: the watch is open (its headers arrived) before the snapshot
is read, so no transition between the two is lost. The guard's readings and the freeze
have no API stream; they are read from memory once per guard tick and only what is new
is sent. A dropped watch (server stopping, subscriber lagging) ends the response and the
browser's EventSource reconnects, getting a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import timestamp_pb2

from faultplane.model.injection import State
from faultplane.v1 import faultplane_pb2 as pb
from faultplane.web.client import ApiRefused
from faultplane.web.context import WebContext, context_of
from faultplane.web.encode import LIVE_STATES, as_json, freeze_json, readings_json
from faultplane.web.sessions import SESSION, Session

GUARDED = {State.PENDING, State.ACTIVE}
KEEPALIVE_SECONDS = 15.0  # a comment line, so a closed tab is noticed and let go
Event = tuple[str, dict[str, Any]] | None  # None: the watch ended


async def stream(request: web.Request) -> web.StreamResponse:
    """GET /events[?id=ID]: `snapshot`, then `injection`, `readings` and `freeze` events."""
    ctx, session = context_of(request), request[SESSION]
    injection_id = request.query.get("id", "")
    call = ctx.api.watch(pb.WatchInjectionsRequest(id=injection_id), session)
    try:
        try:
            await call.initial_metadata()  # subscribed: nothing after this is missed
            snapshot = await _snapshot(ctx, session, injection_id)
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
        await _pump(ctx, call, response, injection_id, snapshot)
        return response
    finally:
        call.cancel()


async def _snapshot(ctx: WebContext, session: Session, injection_id: str) -> dict[str, Any]:
    if injection_id:
        one = await ctx.api.call("GetInjection", pb.GetInjectionRequest(id=injection_id), session)
        injections = [as_json(one)]
    else:
        listed = await ctx.api.call(
            "ListInjections", pb.ListInjectionsRequest(states=LIVE_STATES), session
        )
        injections = [as_json(i) for i in listed.injections]
        latest = {i.id: i.readings[-1:] for i in ctx.view.list(GUARDED)}
        for injection in injections:
            injection["readings"] = readings_json(latest.get(injection["id"], []))
    return {
        "injections": injections,
        "freeze": freeze_json(ctx.view.frozen()),
        "server_time": time.time(),
    }


async def _pump(
    ctx: WebContext, call: Any, response: web.StreamResponse, one: str, snapshot: dict[str, Any]
) -> None:
    queue: asyncio.Queue[Event] = asyncio.Queue()
    sent = {i["id"]: _last_at(i) for i in snapshot["injections"]}
    tasks = [
        asyncio.create_task(_watch(call, queue)),
        asyncio.create_task(_tick(ctx, queue, one, sent, snapshot["freeze"])),
    ]
    try:
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            if event is None:
                return
            await _send(response, *event)
    except (ConnectionResetError, ConnectionError):
        return  # the tab closed
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _watch(call: Any, queue: asyncio.Queue[Event]) -> None:
    try:
        async for event in call:
            queue.put_nowait(("injection", as_json(event)))
    except grpc.aio.AioRpcError:
        pass  # ended by the server: the browser reconnects and re-lists
    finally:
        queue.put_nowait(None)


async def _tick(
    ctx: WebContext,
    queue: asyncio.Queue[Event],
    one: str,
    sent: dict[str, float],
    freeze: dict[str, Any],
) -> None:
    """Every guard tick: each live injection's readings newer than those sent (the last
    one only, on the Now page), and the freeze when it changed."""
    while True:
        await asyncio.sleep(ctx.tick)
        for injection in ctx.view.list(GUARDED):
            if one and injection.id != one:
                continue
            since = sent.get(injection.id, -math.inf)
            new = [r for r in injection.readings if r.at > since]
            if not one:
                new = new[-1:]
            if new:
                sent[injection.id] = new[-1].at
                queue.put_nowait(("readings", {"id": injection.id, "readings": readings_json(new)}))
        now_frozen = freeze_json(ctx.view.frozen())
        if now_frozen != freeze:
            freeze = now_frozen
            queue.put_nowait(("freeze", freeze))


def _last_at(injection: dict[str, Any]) -> float:
    readings = injection.get("readings") or []
    if not readings:
        return -math.inf
    return _seconds(readings[-1]["at"])


def _seconds(rfc3339: str) -> float:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromJsonString(rfc3339)
    return stamp.ToNanoseconds() / 1e9


async def _send(response: web.StreamResponse, name: str, data: dict[str, Any]) -> None:
    payload = json.dumps(data, separators=(",", ":"))
    await response.write(f"event: {name}\ndata: {payload}\n\n".encode())


__all__ = ["stream"]
