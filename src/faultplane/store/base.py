"""The store interface: what the scheduler and API need from persistence, and nothing more.

The store keeps opaque JSON documents produced by the caller (injection bodies, transition
bodies, audit entries, SLO readings); it never interprets them beyond a few indexed columns
(state, service, injection_id). Keeping the contract this narrow is what lets a networked
database replace the embedded SQLite store later without touching the scheduler.

Guarantees every implementation must give:

* `append_transition` / `record_transition` are idempotent on (injection_id, seq): a replay
  after a restart returns False and writes nothing, so no transition is ever duplicated.
* `record_transition` is one transaction: transition, injection state and audit entry are
  all written or none is.
* the audit log is append-only and hash-chained (see `faultplane.store.audit`); appends are
  serialised across threads and processes so the chain never forks. A store given an audit
  key (how is the implementation's business: `SqliteStore(path, audit_key=...)`) keys every
  entry it appends with it and anchors the chain head outside itself, and `verify_audit`
  reports in `checked` exactly which of these it verified.
* `prune_injections` deletes finished injections with their transitions and readings, and
  never an audit entry: the audit names injections by id only, so its chain stays whole.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

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
class StoredTransition:
    seq: int
    at: float
    body: JsonDict


@dataclass(frozen=True)
class StoredInjection:
    id: str
    state: str
    service: str
    created_at: float
    body: JsonDict
    transitions: tuple[StoredTransition, ...]


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
class StoredToken:
    """A bearer token's metadata. The token hash is deliberately not exposed after storing."""

    id: str
    principal: str
    role: str
    created_at: float
    revoked_at: float | None


class SloReading(NamedTuple):
    at: float
    body: JsonDict


class BaselineSample(NamedTuple):
    at: float
    value: float | None
    error: str


@runtime_checkable
class Store(Protocol):
    """Persistence for injections, their history, the audit chain, tokens and SLO data."""

    # injections and transitions
    def save_injection(
        self, injection_id: str, state: str, service: str, created_at: float, body: JsonDict
    ) -> None: ...

    def append_transition(self, injection_id: str, seq: int, at: float, body: JsonDict) -> bool: ...

    def record_transition(
        self,
        injection_id: str,
        seq: int,
        at: float,
        transition_body: JsonDict,
        state: str,
        service: str,
        created_at: float,
        injection_body: JsonDict,
        audit: JsonDict | None,
    ) -> bool: ...

    def load_injections(self, states: Collection[str] | None = None) -> list[StoredInjection]: ...

    # finished injections leave the scheduler's memory; these find them (and prune them)
    def load_injection(self, injection_id: str) -> StoredInjection | None: ...

    def page_injections(
        self,
        states: Collection[str] | None,
        service: str | None,
        before: tuple[float, str] | None,
        limit: int,
        skip: Collection[str] = (),
    ) -> list[StoredInjection]: ...

    def prune_injections(
        self, before: float, states: Collection[str] = FINISHED_STATES, limit: int = 500
    ) -> int: ...

    # audit chain
    def append_audit(self, entry: JsonDict) -> AuditEntry: ...

    def audit_entries(
        self,
        injection_id: str | None = None,
        since: float | None = None,
        limit: int | None = None,
        after_seq: int = 0,
        max_bytes: int | None = None,
    ) -> list[AuditEntry]: ...

    def verify_audit(self) -> AuditVerdict: ...

    # tokens
    def add_token(
        self, token_id: str, principal: str, role: str, token_hash: str, created_at: float
    ) -> None: ...

    def find_token(self, token_hash: str) -> StoredToken | None: ...

    def list_tokens(self) -> list[StoredToken]: ...

    def revoke_token(self, token_id: str) -> bool: ...

    # SLO data
    def add_slo_reading(self, injection_id: str, at: float, body: JsonDict) -> None: ...

    def slo_readings(self, injection_id: str) -> list[SloReading]: ...

    def add_baseline_sample(
        self, slo: str, at: float, value: float | None, error: str = ""
    ) -> None: ...

    def baseline_samples(self, slo: str, since: float) -> list[BaselineSample]: ...

    def prune_baseline(self, before: float) -> int: ...

    # settings
    def set_setting(self, key: str, value: JsonDict | None) -> None: ...

    def get_setting(self, key: str) -> JsonDict | None: ...

    def close(self) -> None: ...
