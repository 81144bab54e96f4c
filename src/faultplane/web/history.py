"""History: finished and live injections, newest first, filtered and paged.

The API filters by service and pages by token; owner, verdict and dates are filtered here,
page by API page, reading at most MAX_SCAN API pages per dashboard page (a filter that
matches little still answers quickly, with a link to look further)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from aiohttp import web

from faultplane.v1 import faultplane_pb2 as pb
from faultplane.web.client import ApiRefused
from faultplane.web.context import context_of
from faultplane.web.render import page
from faultplane.web.sessions import SESSION

PAGE_SIZE = 50
MAX_SCAN = 20
VERDICTS = ("held", "refuted", "inconclusive")


@dataclass(frozen=True)
class Filters:
    service: str = ""
    owner: str = ""
    verdict: str = ""  # held | refuted | inconclusive | ""
    since: float | None = None  # created at or after (UTC day start)
    until: float | None = None  # created before (the day after `to`)

    @classmethod
    def parse(cls, query: dict[str, str]) -> Filters:
        """From the query string; a bad date raises ValueError naming the field."""
        verdict = query.get("verdict", "")
        if verdict and verdict not in VERDICTS:
            raise ValueError(f"verdict: must be one of {', '.join(VERDICTS)}, not {verdict!r}")
        return cls(
            service=query.get("service", "").strip(),
            owner=query.get("owner", "").strip(),
            verdict=verdict,
            since=_day(query.get("from", ""), "from"),
            until=_day(query.get("to", ""), "to", days_after=1),
        )

    def matches(self, injection: pb.Injection) -> bool:
        created = injection.created_at.ToNanoseconds() / 1e9
        return (
            (not self.owner or injection.owner == self.owner)
            and (not self.verdict or _verdict_word(injection.verdict) == self.verdict)
            and (self.since is None or created >= self.since)
            and (self.until is None or created < self.until)
        )


def _verdict_word(verdict: str) -> str:
    if verdict.startswith("hypothesis held"):
        return "held"
    if verdict.startswith("hypothesis refuted"):
        return "refuted"
    return "inconclusive" if verdict.startswith("inconclusive") else ""


def _day(text: str, field: str, days_after: int = 0) -> float | None:
    if not text:
        return None
    try:
        day = dt.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=dt.UTC)
    except ValueError:
        raise ValueError(f"{field}: not a date (YYYY-MM-DD): {text!r}") from None
    return (day + dt.timedelta(days=days_after)).timestamp()


async def history(request: web.Request) -> web.StreamResponse:
    ctx, session = context_of(request), request[SESSION]
    query = dict(request.query)
    try:
        filters = Filters.parse(query)
    except ValueError as exc:
        return page(request, "error.html", 400, message=str(exc))
    rows: list[pb.Injection] = []
    token = query.get("page", "")
    try:
        for _ in range(MAX_SCAN):
            reply = await ctx.api.call(
                "ListInjections",
                pb.ListInjectionsRequest(
                    service=filters.service, page_size=PAGE_SIZE, page_token=token
                ),
                session,
            )
            rows += [i for i in reply.injections if filters.matches(i)]
            token = reply.next_page_token
            # Newest first: once a page ends before `from`, nothing later can match.
            older = (
                bool(reply.injections)
                and filters.since is not None
                and (reply.injections[-1].created_at.ToNanoseconds() / 1e9 < filters.since)
            )
            if not token or len(rows) >= PAGE_SIZE or older:
                token = "" if older else token
                break
    except ApiRefused as exc:
        return page(request, "error.html", exc.status, message=exc.message)
    keep = {k: v for k, v in query.items() if k != "page" and v}
    return page(request, "history.html", rows=rows, next_page=token, query=keep, verdicts=VERDICTS)
