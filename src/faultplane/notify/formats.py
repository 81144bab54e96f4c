"""The bodies a webhook receives: generic JSON, or Slack's incoming-webhook message.

Both are pure functions of an `Event`. The generic body is the event's fields with
`event` and `headline` added (times as Unix seconds and ISO 8601 UTC); Slack's is
`text` (the fallback every client shows) plus one `section` block in mrkdwn.
"""

from __future__ import annotations

import datetime
from typing import Any

from faultplane.notify.events import Event
from faultplane.notify.targets import Format


def iso(at: float | None) -> str:
    if at is None:
        return ""
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def json_body(event: Event) -> dict[str, Any]:
    return {
        "event": event.kind,
        "headline": event.headline,
        "at": event.at,
        "at_iso": iso(event.at),
        "injection_id": event.injection_id,
        "owner": event.owner,
        "by": event.by,
        "state": event.state,
        "services": list(event.services),
        "targets": list(event.targets),
        "faults": list(event.faults),
        "hypothesis": event.hypothesis,
        "ends_at": event.ends_at,
        "ends_at_iso": iso(event.ends_at),
        "verdict": event.verdict,
        "reason": event.reason,
        "link": event.link,
    }


def text_lines(event: Event) -> list[str]:
    """The message as lines a person reads: what, who, where, when it ends, why."""
    if event.kind in ("frozen", "unfrozen"):
        lines = [f"{event.headline} by {event.by or 'faultplane'}"]
        if event.reason:
            lines.append(f"Reason: {event.reason}")
        if event.ends_at is not None:
            lines.append(f"Until: {iso(event.ends_at)}")
        return lines + ([f"Dashboard: {event.link}"] if event.link else [])
    lines = [
        f"{event.headline}: {event.injection_id} owned by {event.owner}",
        f"What: {'; '.join(event.faults)}",
        f"Where: {', '.join(event.services)}; targets {', '.join(event.targets) or 'none'}",
    ]
    if event.ends_at is not None:
        lines.append(f"Scheduled end: {iso(event.ends_at)}")
    if event.hypothesis:
        lines.append(f"Hypothesis: {event.hypothesis}")
    if event.verdict:
        lines.append(f"Verdict: {event.verdict}")
    lines.append(f"Reason: {event.reason}")
    if event.link:
        lines.append(f"Experiment: {event.link}")
    return lines


def slack_body(event: Event) -> dict[str, Any]:
    lines = text_lines(event)
    text = "\n".join(lines)
    shown = "\n".join([f"*{lines[0]}*", *lines[1:]])
    return {
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": shown}}],
    }


def body(event: Event, form: Format) -> dict[str, Any]:
    return slack_body(event) if form == "slack" else json_body(event)
