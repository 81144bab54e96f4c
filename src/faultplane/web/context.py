"""What every dashboard handler shares, held by the aiohttp application."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import jinja2
from aiohttp import web

from faultplane.auth.principal import Principal
from faultplane.model.injection import Injection, State
from faultplane.web.client import ApiClient
from faultplane.web.sessions import SessionStore

# Credentials (the token, or None in local mode) -> who they name, with which role.
Whoami = Callable[[str | None], Awaitable[Principal]]


class LiveView(Protocol):
    """The live injections in memory (the Scheduler), read once when a Now page
    connects for each one's last reading (listed injections carry none; later readings
    come on the watch). Reads only, so nothing here needs the gate."""

    def list(self, states: set[State] | None = None, service: str = "") -> list[Injection]: ...


@dataclass(frozen=True)
class WebContext:
    api: ApiClient
    sessions: SessionStore
    view: LiveView
    whoami: Whoami
    templates: jinja2.Environment
    local: bool  # --auth local: one local admin, no login


CONTEXT = web.AppKey("faultplane_web", WebContext)


def context_of(request: web.Request) -> WebContext:
    return request.app[CONTEXT]
