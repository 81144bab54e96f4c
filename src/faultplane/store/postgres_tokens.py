"""Bearer tokens on PostgreSQL (the `TokenRepository`): looked up by the hash of the
secret, which the `tokens` table keeps UNIQUE, so one secret can never name two tokens."""

from __future__ import annotations

import time

import psycopg

from faultplane.store.base import Conflict, NewToken, StoredToken
from faultplane.store.postgres_db import PostgresDb

_COLUMNS = "id, principal, role, created_at, revoked_at"  # StoredToken's fields, in order


class PostgresTokens:
    """Rows of `tokens`; a revoked token keeps its row (the list shows when it went)."""

    def __init__(self, db: PostgresDb) -> None:
        self._db = db

    def add(self, token: NewToken) -> None:
        with self._db.write() as tx:
            try:
                tx.execute(
                    "INSERT INTO tokens (id, principal, role, token_hash, created_at) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    (token.id, token.principal, token.role, token.token_hash, token.created_at),
                )
            except psycopg.errors.UniqueViolation as exc:
                raise Conflict(f"token {token.id} (or a token with that hash) exists") from exc

    def find(self, token_hash: str) -> StoredToken | None:
        with self._db.read() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM tokens "  # type: ignore[arg-type]
                "WHERE token_hash = %s AND revoked_at IS NULL",
                (token_hash,),
            ).fetchone()
        return StoredToken(*row) if row else None

    def list(self) -> list[StoredToken]:
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM tokens ORDER BY created_at, id"  # type: ignore[arg-type]
            ).fetchall()
        return [StoredToken(*row) for row in rows]

    def revoke(self, token_id: str) -> bool:
        """True if this call revoked it; False if unknown or already revoked."""
        with self._db.write() as tx:
            cursor = tx.execute(
                "UPDATE tokens SET revoked_at = %s WHERE id = %s AND revoked_at IS NULL",
                (time.time(), token_id),
            )
            return cursor.rowcount == 1
