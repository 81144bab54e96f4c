"""What every dashboard handler shares, held by the aiohttp application."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import jinja2
from aiohttp import web

from faultplane.auth.principal import Principal
from faultplane.lifecycle.approval import Freeze
from faultplane.model.injection import Injection, State
from faultplane.web.client import ApiClient
from faultplane.web.sessions import SessionStore

# Credentials (the token, or None in local mode) -> who they name, with which role.
Whoami = Callable[[str | None], Awaitable[Principal]]


class LiveView(Protocol):
    """What the server holds in memory and the API has no stream for: the guard's
    readings of live injections and the freeze (the Scheduler). Read once per tick by
    each open live page; reads only, so nothing here needs the gate."""

    def list(self, states: set[State] | None = None, service: str = "") -> list[Injection]: ...

    def frozen(self) -> Freeze | None: ...


@dataclass(frozen=True)
class WebContext:
    api: ApiClient
    sessions: SessionStore
    view: LiveView
    whoami: Whoami
    templates: jinja2.Environment
    local: bool  # --auth local: one local admin, no login
    tick: float  # seconds between live readings pushed to a page (the guard's tick)


CONTEXT = web.AppKey("faultplane_web", WebContext)


def context_of(request: web.Request) -> WebContext:
    return request.app[CONTEXT]
