"""What a principal's name may be.

A principal name ends up in the audit log, in JSON log lines, in `faultplane audit`'s
table and in abort reasons ("aborted by NAME"). A name with a newline or an escape
sequence could forge a line in a terminal or a plain-text log, an empty name says nothing
about who acted, and an unbounded one lets whoever issues tokens bloat every entry. So a
name is checked once, where it is issued, not escaped everywhere it is shown.
"""

from __future__ import annotations

import unicodedata

MAX_PRINCIPAL_LENGTH = 128


def principal_problem(name: str) -> str:
    """Why `name` is not an acceptable principal, or "" if it is.

    Refused: empty or only whitespace, longer than MAX_PRINCIPAL_LENGTH characters, or
    containing a control character (Unicode category Cc: newline, tab, ESC, DEL, C1) or
    an invisible format character (Cf: bidi overrides, zero-width joiners), which would
    make two different names look the same.
    """
    if not name.strip():
        return "must not be empty"
    if len(name) > MAX_PRINCIPAL_LENGTH:
        return f"at most {MAX_PRINCIPAL_LENGTH} characters, not {len(name)}"
    for index, char in enumerate(name):
        category = unicodedata.category(char)
        if category in ("Cc", "Cf"):
            kind = "control" if category == "Cc" else "invisible formatting"
            return f"must not contain {kind} characters ({char!a} at position {index})"
    return ""
