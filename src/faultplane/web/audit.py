"""The audit page: the chain's verification first, then entries a page at a time (oldest
first, as ListAudit pages them), filtered by injection and time at the API and by kind
(call, transition, notification...), principal, method and outcome here.

The page opens on the first entries of the last `hours`; from there the links move by
sequence number: newer, older, and the latest page. The chain is never pruned, so its
entries are numbered 1..N without gaps and a page that starts after entry `k` is one
ListAudit call. A page reached by a link ignores `hours` (it names its place itself).
"""

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
    token = query.get("page", "")
    size = _page_size(query.get("n", ""))
    try:
        verdict = await ctx.api.call("VerifyAudit", pb.VerifyAuditRequest(), session)
        reply = await ctx.api.call(
            "ListAudit",
            pb.ListAuditRequest(
                injection_id=query.get("injection", "").strip(),
                since=time.time() - hours * 3600 if hours > 0 and not token else 0,
                page_size=size,
                page_token=token,
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
    keep = {k: v for k, v in query.items() if k not in ("page", "n") and v}
    first = reply.entries[0].seq if reply.entries else 0
    latest = max(0, verdict.entries - PAGE_SIZE)
    older = max(0, first - 1 - PAGE_SIZE)
    return page(
        request,
        "audit.html",
        verdict=verdict,
        rows=rows,
        next_page=reply.next_page_token,
        # The entries just before this page: a full page, or what is left at the start.
        older_page=f"{older}&n={first - 1 - older}" if first > 1 else "",
        latest_page=str(latest) if reply.next_page_token and latest > first else "",
        shown=(first, reply.entries[-1].seq) if reply.entries else None,
        query=keep,
        hours=hours,
    )


def _page_size(text: str) -> int:
    """`n`: how many entries (the older link's short first page); else a full page."""
    try:
        return min(max(int(text), 1), PAGE_SIZE)
    except ValueError:
        return PAGE_SIZE
