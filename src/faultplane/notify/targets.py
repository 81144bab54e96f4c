"""Where notifications go: `--notify URL` (generic JSON) or `--notify slack+URL` (Slack).

A webhook URL is often its own credential (Slack's carries the secret in its path), so
only `NotifyTarget.name` (scheme, host and port) is ever logged or audited.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

Format = Literal["json", "slack"]
SLACK_PREFIX = "slack+"


@dataclass(frozen=True)
class NotifyTarget:
    url: str
    format: Format = "json"

    @property
    def name(self) -> str:
        """The target without its path or query, safe to log: `slack https://host`."""
        parts = urlsplit(self.url)
        return f"{self.format} {parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def parse_target(text: str) -> NotifyTarget:
    """`https://…` -> generic JSON; `slack+https://…` -> Slack's incoming-webhook body.
    The ValueError says what is wrong with the URL."""
    form: Format = "json"
    url = text
    if text.startswith(SLACK_PREFIX):
        form, url = "slack", text[len(SLACK_PREFIX) :]
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(
            f"{url!r}: must be an http:// or https:// URL (prefix slack+ for Slack's format)"
        )
    if not parts.hostname:
        raise ValueError(f"{url!r}: has no host")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError as exc:
        raise ValueError(f"{url!r}: {exc}") from None
    return NotifyTarget(url, form)


def parse_web_url(text: str) -> str:
    """`--web-url`: the dashboard's base URL, e.g. http://127.0.0.1:8080 (no trailing
    slash kept); the ValueError says what is wrong."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text!r}: must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment:
        raise ValueError(f"{text!r}: a base URL takes no query or fragment")
    return text.rstrip("/")
