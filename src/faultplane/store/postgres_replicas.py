"""The replicas' shared state on PostgreSQL: who serves, and which sidecar each holds.

Several `faultplane serve` processes on one database (faultplane.replicas) each write a
heartbeat row in `replicas` and, for every sidecar whose xDS stream they hold, a row in
`replica_sidecars` (keyed by node id: one holder at a time, the latest to claim it). A
replica reads the others' connected sidecars from here, so target selection and
ListSidecars on any replica see the whole fleet. A row counts only while its replica's
heartbeat is fresh: a SIGKILLed replica's sidecars drop out of every view within the
staleness bound, without anyone cleaning up after it.

Not part of the `Store` protocol: SQLite is one process, and has no replicas.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from faultplane.store.postgres_db import PostgresDb
from faultplane.store.replica_rows import RemoteSidecar, ReplicaRow, SidecarRow


class PostgresReplicas:
    """Rows of `replicas` and `replica_sidecars`; telemetry-grade writes (not durable:
    a lost heartbeat is re-sent within a second, and a crash of the database loses
    nothing an operator was told)."""

    def __init__(self, db: PostgresDb) -> None:
        self._db = db

    def beat(
        self,
        name: str,
        sidecars: Sequence[SidecarRow],
        now: float,
        xds_address: str = "",
        api_address: str = "",
    ) -> None:
        """One heartbeat of replica `name`: its row, and its connected sidecars (claimed,
        refreshed); its rows for sidecars it no longer holds are marked disconnected. A
        sidecar another replica claimed meanwhile is left to that replica."""
        with self._db.write(durable=False) as tx:
            tx.execute(
                "INSERT INTO replicas (name, started_at, heartbeat_at, xds_address, "
                "api_address) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
                "heartbeat_at = excluded.heartbeat_at, xds_address = excluded.xds_address, "
                "api_address = excluded.api_address, stopped_at = NULL",
                (name, now, now, xds_address, api_address),
            )
            with tx.conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO replica_sidecars (node_id, replica, cluster, metadata, "
                    "connected, connected_at, heartbeat_at) VALUES (%s, %s, %s, %s, TRUE, "
                    "%s, %s) ON CONFLICT (node_id) DO UPDATE SET replica = excluded.replica, "
                    "cluster = excluded.cluster, metadata = excluded.metadata, "
                    "connected = TRUE, connected_at = excluded.connected_at, "
                    "disconnected_at = NULL, heartbeat_at = excluded.heartbeat_at",
                    [
                        (s.node_id, name, s.cluster, json.dumps(s.metadata, sort_keys=True),
                         s.connected_at, now)
                        for s in sidecars
                    ],
                )  # fmt: skip
            tx.execute(
                "UPDATE replica_sidecars SET connected = FALSE, disconnected_at = %s "
                "WHERE replica = %s AND connected AND NOT (node_id = ANY(%s::text[]))",
                (now, name, [s.node_id for s in sidecars]),
            )

    def leave(self, name: str, now: float) -> None:
        """Replica `name` stops (cleanly): its sidecars are disconnected at once, rather
        than when its heartbeat goes stale."""
        with self._db.write(durable=False) as tx:
            tx.execute(
                "UPDATE replica_sidecars SET connected = FALSE, disconnected_at = %s "
                "WHERE replica = %s AND connected",
                (now, name),
            )
            tx.execute("UPDATE replicas SET stopped_at = %s WHERE name = %s", (now, name))

    def remote_sidecars(self, name: str, fresh_after: float) -> list[RemoteSidecar]:
        """The sidecars connected to replicas other than `name` whose heartbeat is later
        than `fresh_after` (epoch seconds), by node id."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT s.replica, s.node_id, s.cluster, s.metadata, s.connected_at "
                "FROM replica_sidecars s JOIN replicas r ON r.name = s.replica "
                "WHERE s.connected AND s.replica <> %s AND r.heartbeat_at > %s "
                "AND r.stopped_at IS NULL ORDER BY s.node_id",
                (name, fresh_after),
            ).fetchall()
        return [RemoteSidecar(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in rows]

    def replicas(self) -> list[ReplicaRow]:
        """Every replica that ever beat, by name."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT name, started_at, heartbeat_at, xds_address, api_address, stopped_at "
                "FROM replicas ORDER BY name"
            ).fetchall()
        return [ReplicaRow(*row) for row in rows]
