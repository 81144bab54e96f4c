"""Server-wide blackouts in the running server: persisted, listed, removed.

The calendar itself (what a weekly or one-off blackout covers, whether a run fits before
one) is the pure core's (faultplane.scheduling.windows, calendar); this module keeps the
operator's blackouts durably in the store (`scheduling_items`, kind "blackout") and in
memory for the packer, which reads them at every re-plan. A blackout never stops a
running experiment: the packer starts nothing that would run into one, so none runs in
it unless it was added while that experiment already ran (then `overlapping` names it,
and the operator decides: abort, or freeze, the instant switch).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from faultplane.lifecycle.journal import Journal
from faultplane.scheduling.windows import Blackout, parse_blackout

KIND = "blackout"


class UnknownBlackout(KeyError):
    """No blackout has this id."""


@dataclass(frozen=True)
class StoredBlackout:
    """A blackout as the operator gave it (`body`: name, weekly+tz or start+end as ISO
    text, created_by, created_at) and as the packer reads it (`rule`)."""

    id: str
    body: dict[str, Any]
    rule: Blackout


def new_blackout_id() -> str:
    return f"blk-{secrets.token_hex(4)}"


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def blackout_input(
    name: str, weekly: str, tz: str, start: float | None, end: float | None
) -> dict[str, Any]:
    """The parser's input from the API's fields (empty strings: not given)."""
    data: dict[str, Any] = {"name": name}
    if weekly:
        data["weekly"] = weekly
    if tz:
        data["tz"] = tz
    if start is not None:
        data["start"] = _iso(start)
    if end is not None:
        data["end"] = _iso(end)
    return data


class Blackouts:
    """The blackouts, in memory and in the store; changed only through `add`/`remove`."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._items: dict[str, StoredBlackout] = {}

    async def load(self) -> None:
        rows = await self._journal.read(self._journal.store.scheduling.list, KIND)
        self._items = {}
        for item_id, body in rows:
            data = {k: v for k, v in body.items() if k not in ("created_by", "created_at")}
            self._items[item_id] = StoredBlackout(item_id, body, parse_blackout(data))

    def rules(self) -> tuple[Blackout, ...]:
        return tuple(self._items[k].rule for k in sorted(self._items))

    def list(self) -> list[StoredBlackout]:
        return [self._items[k] for k in sorted(self._items)]

    async def add(self, data: dict[str, Any], principal: str) -> StoredBlackout:
        """Validate (ScheduleError names the field), persist, then keep it."""
        rule = parse_blackout(data)  # before anything is written
        body = {**data, "created_by": principal, "created_at": time.time()}
        item = StoredBlackout(new_blackout_id(), body, rule)
        await self._journal.run(self._journal.store.scheduling.put, KIND, item.id, body)
        self._items[item.id] = item
        return item

    async def remove(self, item_id: str) -> StoredBlackout:
        item = self._items.get(item_id)
        if item is None:
            raise UnknownBlackout(item_id)
        await self._journal.run(self._journal.store.scheduling.delete, KIND, item_id)
        del self._items[item_id]
        return item
