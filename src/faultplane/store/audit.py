"""The audit chain's hashing and verification, independent of where the rows are kept.

Each entry's hash is sha256 (hex) over ``prev_hash + canonical_json({"seq", "at", "entry"})``
and the first entry's prev_hash is 64 zeros. Because seq and at are inside the hash, an
edited entry fails its own hash, a swapped or moved entry fails too (its seq changed), and a
deleted entry leaves a seq gap and a prev_hash that points at nothing. The store also keeps
the chain head (last seq and hash) so deleting entries at the *end* of the log is caught.

This module is pure so a networked store, or an offline `faultplane audit verify` over an
exported log, verifies with exactly the same rules.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any, NamedTuple

from faultplane.store.base import AuditVerdict

GENESIS_HASH = "0" * 64


def canonical_json(value: Any) -> str:
    """The one serialisation that is hashed: sorted keys, no spaces, ASCII, no NaN/Infinity.

    NaN is refused because it is not JSON; another verifier could not reproduce the hash.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def entry_hash(prev_hash: str, seq: int, at: float, entry: Any) -> str:
    payload = canonical_json({"seq": seq, "at": at, "entry": entry})
    return hashlib.sha256((prev_hash + payload).encode("utf-8")).hexdigest()


class AuditRow(NamedTuple):
    """An audit entry exactly as stored: the entry is still text, so garbage is reportable."""

    seq: int
    at: float
    entry_text: str
    prev_hash: str
    hash: str
    injection_id: str | None  # the indexed copy of entry["injection_id"]


def _row_problem(row: AuditRow, expected_seq: int, prev_hash: str) -> str:
    """What is wrong with this one row given the previous one, or "" if nothing."""
    seq = row.seq
    if seq != expected_seq:
        where = (
            f"chain broken between {expected_seq - 1} and {seq}"
            if expected_seq > 1
            else "the chain does not start at entry 1"
        )
        return f"entry {seq}: previous entry missing (expected seq {expected_seq}); {where}"
    try:
        entry = json.loads(row.entry_text)
    except (TypeError, ValueError):
        return f"entry {seq}: content is not valid JSON"
    try:
        computed = entry_hash(row.prev_hash, seq, row.at, entry)
    except (TypeError, ValueError):
        return f"entry {seq}: content cannot be hashed"
    if computed != row.hash:
        return f"entry {seq}: hash does not match its content"
    if row.prev_hash != prev_hash:
        if seq == 1:
            return "entry 1: prev_hash is not the genesis hash"
        return (
            f"entry {seq}: prev_hash does not match the hash of entry {seq - 1}; "
            f"chain broken between {seq - 1} and {seq}"
        )
    indexed = entry.get("injection_id") if isinstance(entry, dict) else None
    if row.injection_id != (None if indexed is None else str(indexed)):
        return f"entry {seq}: indexed injection_id does not match its content"
    return ""


def verify_chain(rows: Iterable[AuditRow], head: tuple[int, str] | None) -> AuditVerdict:
    """Walk rows in seq order and report the first place the chain breaks.

    `head` is the (seq, hash) the store recorded with its last append, or None if it never
    appended. Every row is counted even after a break, so `entries` is the log's size.
    """
    expected_seq, prev_hash = 1, GENESIS_HASH
    count = 0
    broken_at: int | None = None
    problem = ""
    last: AuditRow | None = None
    for row in rows:
        count += 1
        if broken_at is None:
            found = _row_problem(row, expected_seq, prev_hash)
            if found:
                broken_at, problem = row.seq, found
        expected_seq, prev_hash, last = row.seq + 1, row.hash, row
    if broken_at is None:
        broken_at, problem = _tail_problem(last, head)
    if broken_at is None:
        return AuditVerdict(ok=True, entries=count, broken_at=None, problem="")
    return AuditVerdict(ok=False, entries=count, broken_at=broken_at, problem=problem)


def _tail_problem(last: AuditRow | None, head: tuple[int, str] | None) -> tuple[int | None, str]:
    """Compare the last row with the recorded head: catches entries deleted from the end."""
    last_seq = last.seq if last is not None else 0
    if head is None:
        if last is None:
            return None, ""
        return 1, "the chain head is missing: the log was written outside the store"
    head_seq, head_hash = head
    if last_seq < head_seq:
        first = last_seq + 1
        missing = f"entry {first}" if first == head_seq else f"entries {first}..{head_seq}"
        return first, f"{missing} missing at the end of the log (chain head is {head_seq})"
    if last_seq > head_seq:
        extra = head_seq + 1
        return extra, f"entry {extra}: appended outside the store (chain head is {head_seq})"
    if last is not None and last.hash != head_hash:
        return last_seq, f"entry {last_seq}: hash differs from the recorded chain head"
    return None, ""
