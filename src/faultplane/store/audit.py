"""The audit chain's hashing and verification, independent of where the rows are kept.

Each entry's hash is over ``prev_hash + canonical_json({"seq", "at", "entry"})`` and the
first entry's prev_hash is 64 zeros. Because seq and at are inside the hash, an edited
entry fails its own hash, a swapped or moved entry fails too (its seq changed), and a
deleted entry leaves a seq gap and a prev_hash that points at nothing. The store also keeps
the chain head (last seq and hash) so deleting entries at the *end* of the log is caught.

The hash is HMAC-SHA256 under the audit key (`faultplane.store.audit_key`) for entries
written by a keyed store, and plain sha256 (hex) for entries written before there was a
key; each row says which (its scheme). Plain sha256 proves nothing against someone who can
write the store: they can recompute it. The keyed hash they cannot, without the key. An
unkeyed entry after a keyed one is a break: only a writer without the key produces one.
What verification could and could not check is part of its verdict (`checked`,
`unchecked`), so `faultplane audit verify` never claims more than it proved.

This module is pure so a networked store, or an offline `faultplane audit verify` over an
exported log, verifies with exactly the same rules.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any, NamedTuple

from faultplane.store.audit_key import HMAC_SCHEME, SHA256_SCHEME, AuditKey
from faultplane.store.base import AuditVerdict

GENESIS_HASH = "0" * 64


def canonical_json(value: Any) -> str:
    """The one serialisation that is hashed: sorted keys, no spaces, ASCII, no NaN/Infinity.

    NaN is refused because it is not JSON; another verifier could not reproduce the hash.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _payload(seq: int, at: float, entry: Any) -> str:
    return canonical_json({"seq": seq, "at": at, "entry": entry})


def entry_hash(prev_hash: str, seq: int, at: float, entry: Any) -> str:
    """The unkeyed (sha256) hash: what entries written before the audit key carry."""
    return hashlib.sha256((prev_hash + _payload(seq, at, entry)).encode("utf-8")).hexdigest()


def seal_entry(
    prev_hash: str, seq: int, at: float, entry: Any, key: AuditKey | None
) -> tuple[str, str]:
    """(scheme, hash) for a new entry: keyed when there is a key, sha256 otherwise."""
    if key is None:
        return SHA256_SCHEME, entry_hash(prev_hash, seq, at, entry)
    return key.scheme, key.entry_hash(prev_hash, _payload(seq, at, entry))


class AuditRow(NamedTuple):
    """An audit entry exactly as stored: the entry is still text, so garbage is reportable."""

    seq: int
    at: float
    entry_text: str
    prev_hash: str
    hash: str
    injection_id: str | None  # the indexed copy of entry["injection_id"]
    scheme: str = SHA256_SCHEME


class _Walk:
    """What the walk has seen so far: keyed entries, and ones it could not check."""

    def __init__(self, key: AuditKey | None) -> None:
        self.key = key
        self.keyed_first: int | None = None
        self.keyed = 0

    def content_problem(self, row: AuditRow, entry: Any) -> str:
        """Does the row's hash match its content under its scheme?"""
        seq, scheme = row.seq, row.scheme
        if scheme == SHA256_SCHEME:
            if self.keyed_first is not None:
                return (
                    f"entry {seq}: not keyed, yet it follows keyed entries (rewritten or "
                    "appended by someone without the audit key)"
                )
            try:
                computed = entry_hash(row.prev_hash, seq, row.at, entry)
            except (TypeError, ValueError):
                return f"entry {seq}: content cannot be hashed"
            return "" if computed == row.hash else f"entry {seq}: hash does not match its content"
        name, _, key_id = str(scheme).partition("/")
        if name != HMAC_SCHEME or not key_id:
            return f"entry {seq}: unknown hash scheme {scheme!r}"
        if self.keyed_first is None:
            self.keyed_first = seq
        self.keyed += 1
        if self.key is None:
            return ""  # links and sequence only: the content needs the key
        if key_id != self.key.id:
            return (
                f"entry {seq}: keyed with another audit key (id {key_id}; this key is "
                f"{self.key.id})"
            )
        try:
            computed = self.key.entry_hash(row.prev_hash, _payload(seq, row.at, entry))
        except (TypeError, ValueError):
            return f"entry {seq}: content cannot be hashed"
        if computed != row.hash:
            return (
                f"entry {seq}: keyed hash does not match its content (edited by someone "
                "without the audit key)"
            )
        return ""

    def guarantees(self, count: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(checked, unchecked) for a chain that verified."""
        chain = f"hash chain intact: {count} entries, in sequence, each linked to the one before"
        if self.key is None:
            if self.keyed:
                chain += (
                    f" (the content of the {self.keyed} keyed entries was not checked: "
                    "that needs the audit key)"
                )
            return (chain,), (
                "not keyed: no audit key file, so this checked only the unkeyed hash chain, "
                "which anyone who can write the store can recompute (pass --audit-key-file)",
            )
        if not self.keyed:
            pre_key = f"all {count} entries were" if count else "nothing was"
            return (chain,), (f"no entry is keyed yet: {pre_key} written before the audit key",)
        first = self.keyed_first or 1
        keyed = (
            f"keyed with the audit key {self.key.id} (an attacker without the key cannot "
            f"recompute it): entries {first}..{count}"
        )
        if first > 1:
            keyed += f", and 1..{first - 1} (written before the key) through entry {first}'s link"
        return (chain, keyed), ()


def _row_problem(row: AuditRow, expected_seq: int, prev_hash: str, walk: _Walk) -> str:
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
    problem = walk.content_problem(row, entry)
    if problem:
        return problem
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


def verify_chain(
    rows: Iterable[AuditRow], head: tuple[int, str] | None, key: AuditKey | None = None
) -> AuditVerdict:
    """Walk rows in seq order and report the first place the chain breaks.

    `head` is the (seq, hash) the store recorded with its last append, or None if it never
    appended. Every row is counted even after a break, so `entries` is the log's size.
    With `key`, keyed entries are checked against it; without, only their links.
    """
    walk = _Walk(key)
    expected_seq, prev_hash = 1, GENESIS_HASH
    count = 0
    broken_at: int | None = None
    problem = ""
    last: AuditRow | None = None
    for row in rows:
        count += 1
        if broken_at is None:
            found = _row_problem(row, expected_seq, prev_hash, walk)
            if found:
                broken_at, problem = row.seq, found
        expected_seq, prev_hash, last = row.seq + 1, row.hash, row
    if broken_at is None:
        broken_at, problem = _tail_problem(last, head)
    if broken_at is None:
        checked, unchecked = walk.guarantees(count)
        return AuditVerdict(True, count, None, "", checked, unchecked)
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
