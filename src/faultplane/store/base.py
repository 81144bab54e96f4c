"""What goes into the store and what comes back out: record types and errors.

The store keeps opaque JSON documents produced by the caller (injection bodies, transition
bodies, audit entries, SLO readings); it never interprets them beyond a few indexed columns
(state, service, injection_id). The records below are those columns plus the document, so
every implementation (`faultplane.store.repositories` says what one must guarantee) writes
and returns the same shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

JsonDict = dict[str, Any]
# The injection states that never change again: what retention may delete.
FINISHED_STATES = ("COMPLETED", "ABORTED", "FAILED")


class StoreError(Exception):
    """A persistence problem the caller can report; the message names what and where."""


class SchemaVersionError(StoreError):
    """The database was written by a newer faultplane (or is not a faultplane database)."""


class Conflict(StoreError):
    """A unique key (token id, token hash) is already taken."""


class UnknownInjection(StoreError):
    """A record refers to an injection that was never saved."""


@dataclass(frozen=True)
class InjectionRecord:
    """An injection as stored: the columns it is listed and pruned by, and its document."""

    id: str
    state: str
    service: str
    created_at: float
    body: JsonDict


@dataclass(frozen=True)
class TransitionRecord:
    """One step of an injection's history; (injection_id, seq) is unique, so a replay of
    the same step after a restart is recognised and written nowhere."""

    injection_id: str
    seq: int
    at: float
    body: JsonDict


@dataclass(frozen=True)
class StoredInjection(InjectionRecord):
    """An injection read back: its record with its transitions, in seq order."""

    transitions: tuple[TransitionRecord, ...]


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: float
    entry: JsonDict
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class AuditVerdict:
    """Result of walking the audit chain. `broken_at` is the seq of the first bad entry.

    `checked` says, one sentence each, which guarantees were verified (the hash chain, the
    keyed hash, the anchored head); `unchecked` what could not be and why (no key, say).
    """

    ok: bool
    entries: int
    broken_at: int | None
    problem: str
    checked: tuple[str, ...] = ()
    unchecked: tuple[str, ...] = ()


@dataclass(frozen=True)
class NewToken:
    """A bearer token being issued: stored by the hash of its secret, never the secret."""

    id: str
    principal: str
    role: str
    token_hash: str
    created_at: float


@dataclass(frozen=True)
class StoredToken:
    """A bearer token's metadata. The token hash is deliberately not exposed after storing."""

    id: str
    principal: str
    role: str
    created_at: float
    revoked_at: float | None


class StoredReading(NamedTuple):
    """A guard reading of one injection as stored: when, and the reading's document (the
    domain `SloReading` is built back from it, see `faultplane.lifecycle.records`)."""

    at: float
    body: JsonDict


class BaselineSample(NamedTuple):
    """One service-wide sample of an SLO, kept for the steady-state baseline."""

    at: float
    value: float | None
    error: str
