"""A real PostgreSQL server for tests: one cluster per test session in a temp dir, a fresh
database per test (faultplane.demo.postgres runs it; this module only makes fixtures).

The binaries are required, not optional: without them the run fails rather than skips,
since the store contract must run on both backends (scripts/test installs them).

Use: `from tests.postgres import postgres_cluster, postgres_url` in a test module, then
take `postgres_url` (a new empty database) or `postgres_cluster` (to make several, or to
stop and start the server) as a fixture.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from faultplane.demo.postgres import PostgresCluster, PostgresMissing, local_postgres

__all__ = ["PostgresCluster", "postgres_cluster", "postgres_url"]


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One PostgreSQL server for the session (started on first use)."""
    # Not under pytest's tmp dir: that is private to root, and the server runs as postgres.
    try:
        cluster = local_postgres()
    except PostgresMissing as exc:
        pytest.fail(f"{exc} (scripts/test)")
    try:
        yield cluster
    finally:
        cluster.stop()
        cluster.remove()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """A fresh, empty database on the session's server."""
    return postgres_cluster.create_database()
