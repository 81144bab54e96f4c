"""The one error of the scheduling input: which field is wrong, and why.

The API edge turns it into INVALID_ARGUMENT with the message as is, so the message names
the field the way the request spells it (`windows[0].tz`), never a Python name.
"""

from __future__ import annotations


class ScheduleError(ValueError):
    """A window, blackout, recurrence or rule that cannot be used as given."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
