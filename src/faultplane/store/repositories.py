"""The store interface: what the lifecycle, the guard and the API need from persistence.

`Store` is five small repositories, one per kind of record, plus `close()`. Keeping each
contract this narrow is what lets a networked database replace the embedded SQLite store
by implementing the same protocols, without touching a caller.

Guarantees every implementation must give:

* `InjectionRepository.record_transition` is idempotent on (injection_id, seq): a replay
  after a restart returns False and writes nothing, so no transition is ever duplicated.
  It is one transaction: transition, injection record and audit entry are all written or
  none is (so the injection repository appends to the same audit chain as `audit`).
* the audit log is append-only and hash-chained (see `faultplane.store.audit`); appends are
  serialised across threads and processes so the chain never forks. A store given an audit
  key (how is the implementation's business: `SqliteStore(path, audit_key=...)`) keys every
  entry it appends with it and anchors the chain head outside itself, and
  `AuditRepository.verify` reports in `checked` exactly which of these it verified.
* `InjectionRepository.prune` deletes finished injections with their transitions and
  readings, and never an audit entry: the audit names injections by id only, so its chain
  stays whole.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol, runtime_checkable

from faultplane.store.base import (
    FINISHED_STATES,
    AuditEntry,
    AuditVerdict,
    BaselineSample,
    InjectionRecord,
    JsonDict,
    NewToken,
    StoredInjection,
    StoredReading,
    StoredToken,
    TransitionRecord,
)


@runtime_checkable
class InjectionRepository(Protocol):
    """Injections and their transitions."""

    def save(self, injection: InjectionRecord) -> None:
        """Insert or replace the injection's record (its transitions stay)."""

    def record_transition(
        self, transition: TransitionRecord, injection: InjectionRecord, audit: JsonDict | None
    ) -> bool:
        """In one transaction: the transition, the injection's new record and, if given,
        the audit entry; False (and nothing written) if the transition was recorded before."""

    def get(self, injection_id: str) -> StoredInjection | None:
        """One injection with its history; finished ones are found here, not in memory."""

    def load(self, states: Collection[str] | None = None) -> list[StoredInjection]:
        """Every injection (in `states`), oldest first (created_at, then id)."""

    def page(
        self,
        states: Collection[str] | None,
        service: str | None,
        before: tuple[float, str] | None,
        limit: int,
        skip: Collection[str] = (),
    ) -> list[StoredInjection]:
        """Newest first (created_at, then id, descending), strictly older than `before`,
        at most `limit`, leaving out the ids in `skip` (those the caller holds itself)."""

    def prune(
        self, before: float, states: Collection[str] = FINISHED_STATES, limit: int = 500
    ) -> int:
        """Delete up to `limit` injections in `states` whose record last changed before
        `before`, with their transitions and readings; how many went. Call again while it
        returns `limit`: small batches keep writers waiting briefly. Never an audit entry."""


@runtime_checkable
class ReadingRepository(Protocol):
    """The guard's readings per injection, and the service-wide baseline samples."""

    def add(self, injection_id: str, reading: StoredReading) -> None:
        """Raises UnknownInjection if the injection was never saved."""

    def load(self, injection_id: str) -> list[StoredReading]:
        """The injection's readings, oldest first."""

    def add_baseline(self, slo: str, sample: BaselineSample) -> None: ...

    def baseline(self, slo: str, since: float) -> list[BaselineSample]:
        """The SLO's samples taken at or after `since`, oldest first."""

    def prune_baseline(self, before: float) -> int:
        """Delete every SLO's samples older than `before`; how many went."""


@runtime_checkable
class AuditRepository(Protocol):
    """The hash-chained, append-only audit log."""

    def append(self, entry: JsonDict) -> AuditEntry:
        """Chain the entry after the head; its "at" (else the store's clock) is hashed too."""

    def entries(
        self,
        injection_id: str | None = None,
        since: float | None = None,
        limit: int | None = None,
        after_seq: int = 0,
        max_bytes: int | None = None,
    ) -> list[AuditEntry]:
        """Entries oldest first (by seq); `since` is inclusive, `limit` keeps the first N,
        `after_seq` starts after that entry (a page), `max_bytes` stops once the entries'
        stored text reaches it (the entry that reaches it is included, so at least one)."""

    def verify(self) -> AuditVerdict:
        """Walk the whole chain (with the audit key: the keyed hashes, the anchored heads)."""


@runtime_checkable
class TokenRepository(Protocol):
    """Bearer tokens, by the hash of their secret."""

    def add(self, token: NewToken) -> None:
        """Raises Conflict if the id or the hash is taken."""

    def find(self, token_hash: str) -> StoredToken | None:
        """The live token with this hash; a revoked one is not found."""

    def list(self) -> list[StoredToken]:
        """Every token, revoked ones too, oldest first."""

    def revoke(self, token_id: str) -> bool:
        """True if this call revoked it; False if unknown or already revoked."""


@runtime_checkable
class SettingRepository(Protocol):
    """Small server-wide documents (the freeze, the server's uptime record), by key."""

    def get(self, key: str) -> JsonDict | None: ...

    def set(self, key: str, value: JsonDict | None) -> None:
        """Store a setting; None deletes it (so get returns None again)."""


@runtime_checkable
class SchedulingRepository(Protocol):
    """The scheduler's documents (blackouts, recurring schedules), by kind and id."""

    def put(self, kind: str, item_id: str, body: JsonDict) -> None:
        """Create or replace one document."""

    def get(self, kind: str, item_id: str) -> JsonDict | None: ...

    def list(self, kind: str) -> list[tuple[str, JsonDict]]:
        """Every document of a kind, by id."""

    def delete(self, kind: str, item_id: str) -> bool:
        """True if this call deleted it; False if there was none."""


@runtime_checkable
class Store(Protocol):
    """Persistence for injections, their history, SLO data, the audit chain, tokens and
    settings: one repository each."""

    @property
    def injections(self) -> InjectionRepository: ...

    @property
    def readings(self) -> ReadingRepository: ...

    @property
    def audit(self) -> AuditRepository: ...

    @property
    def tokens(self) -> TokenRepository: ...

    @property
    def settings(self) -> SettingRepository: ...

    @property
    def scheduling(self) -> SchedulingRepository: ...

    def close(self) -> None: ...
