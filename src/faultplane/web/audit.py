"""The audit page: the chain's verification first, then entries a page at a time (oldest
first, as ListAudit pages them), filtered by injection and time at the API and by kind
(call, transition, notification...), principal, method and outcome here."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from faultplane.v1 import faultplane_pb2 as pb
from faultplane.web.client import ApiRefused
from faultplane.web.context import context_of
from faultplane.web.render import page
from faultplane.web.sessions import SESSION

PAGE_SIZE = 100
DEFAULT_HOURS = 24.0  # the page opens on the last day, not the beginning of time


@dataclass(frozen=True)
class Row:
    seq: int
    at: Any
    kind: str
    principal: str
    method: str
    outcome: str
    injection_id: str
    detail: str


def row(entry: pb.AuditEntry) -> Row:
    body = json.loads(entry.entry_json)
    request = body.get("request") if isinstance(body.get("request"), dict) else {}
    detail = body.get("detail") or body.get("reason") or ""
    if not detail and request:
        detail = json.dumps(request, separators=(",", ":"))[:200]
    return Row(
        seq=entry.seq,
        at=entry.at,
        kind=str(body.get("kind", "")),
        principal=str(body.get("principal", "")),
        method=str(body.get("method", "") or body.get("to", "")),
        outcome=str(body.get("outcome", "")),
        injection_id=str(body.get("injection_id", "")),
        detail=str(detail),
    )


async def audit(request: web.Request) -> web.StreamResponse:
    ctx, session = context_of(request), request[SESSION]
    query = dict(request.query)
    try:
        hours = float(query.get("hours", DEFAULT_HOURS))
    except ValueError:
        return page(request, "error.html", 400, message="hours: must be a number")
    wanted = {k: query.get(k, "").strip() for k in ("kind", "principal", "method", "outcome")}
    try:
        verdict = await ctx.api.call("VerifyAudit", pb.VerifyAuditRequest(), session)
        reply = await ctx.api.call(
            "ListAudit",
            pb.ListAuditRequest(
                injection_id=query.get("injection", "").strip(),
                since=time.time() - hours * 3600 if hours > 0 else 0,
                page_size=PAGE_SIZE,
                page_token=query.get("page", ""),
            ),
            session,
        )
    except ApiRefused as exc:
        return page(request, "error.html", exc.status, message=exc.message)
    rows = [
        r
        for r in map(row, reply.entries)
        if all(not v or v.lower() in getattr(r, k).lower() for k, v in wanted.items())
    ]
    keep = {k: v for k, v in query.items() if k != "page" and v}
    return page(
        request,
        "audit.html",
        verdict=verdict,
        rows=rows,
        next_page=reply.next_page_token,
        query=keep,
        hours=hours,
    )
