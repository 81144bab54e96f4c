"""Faults across replicas on PostgreSQL: each owner's desired faults per sidecar, and the
evidence the sidecar's holding replica records for them (faultplane.replicas.plane).

An owner publishes, per sidecar, the whole set of its faults there in one transaction
with one new sequence number: rows it no longer has become tombstones at that number, so
a withdrawal is evidenced like a change. The NOTIFY on `faultplane_faults` (payload: the
node id) is sent inside that transaction, so a listener hears of a change only once it
is committed and readable. Evidence is recorded per (sidecar, owner) with the highest
sequence number the sidecar's answered state carried, never moving backwards, and
announced on `faultplane_evidence` (payload: the evidence as JSON) in its transaction.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence

from faultplane.model.spec import injection_of
from faultplane.store.postgres_db import PostgresDb
from faultplane.store.replica_rows import DesiredFault, FaultChange, FaultEvidence

FAULTS_CHANNEL = "faultplane_faults"
EVIDENCE_CHANNEL = "faultplane_evidence"
# Tombstones are kept this long for late readers, then pruned.
TOMBSTONE_SECONDS = 600.0


class PostgresFaults:
    def __init__(self, db: PostgresDb) -> None:
        self._db = db

    def publish(self, owner: str, faults: Mapping[str, Sequence[FaultChange]]) -> dict[str, int]:
        """Make `faults[node]` owner's whole set of faults on each node; the sequence
        number each node's change got."""
        seqs: dict[str, int] = {}
        now = time.time()
        with self._db.write() as tx:
            # Fenced: never a fault of an injection another replica has taken over.
            ids = list({injection_of(c.fault_key) for cs in faults.values() for c in cs})
            taken = {
                row[0]
                for row in tx.execute(
                    "SELECT injection_id FROM injection_leases WHERE injection_id = "
                    "ANY(%s::text[]) AND owner <> %s",
                    (ids, owner),
                )
            }
            for node, changes in faults.items():
                changes = [c for c in changes if injection_of(c.fault_key) not in taken]
                row = tx.execute("SELECT nextval('fault_seq')").fetchone()
                assert row is not None
                seq = seqs[node] = int(row[0])
                for change in changes:
                    tx.execute(
                        "INSERT INTO fault_desired (node_id, fault_key, injection_id, owner, "
                        "enabled, level, lease_until, removed, seq, updated_at) VALUES "
                        "(%s, %s, %s, %s, %s, %s, %s, FALSE, %s, %s) ON CONFLICT (node_id, "
                        "fault_key) DO UPDATE SET owner = excluded.owner, enabled = "
                        "excluded.enabled, level = excluded.level, lease_until = "
                        "excluded.lease_until, removed = FALSE, seq = excluded.seq, "
                        "updated_at = excluded.updated_at",
                        (node, change.fault_key, injection_of(change.fault_key), owner,
                         change.enabled, change.level, change.lease_until, seq, now),
                    )  # fmt: skip
                tx.execute(
                    "UPDATE fault_desired SET removed = TRUE, enabled = FALSE, seq = %s, "
                    "updated_at = %s WHERE node_id = %s AND owner = %s AND NOT removed "
                    "AND NOT (fault_key = ANY(%s::text[]))",
                    (seq, now, node, owner, [change.fault_key for change in changes]),
                )
                tx.execute("SELECT pg_notify(%s, %s)", (FAULTS_CHANNEL, node))
        return seqs

    def desired(
        self, nodes: Sequence[str], exclude_owner: str, fresh_after: float
    ) -> list[DesiredFault]:
        """The rows (tombstones too) on `nodes` of every owner but `exclude_owner` whose
        heartbeat is later than `fresh_after`: a dead owner's faults count for nobody."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT f.node_id, f.fault_key, f.injection_id, f.owner, f.enabled, f.level, "
                "f.lease_until, f.removed, f.seq FROM fault_desired f JOIN replicas r ON "
                "r.name = f.owner WHERE f.node_id = ANY(%s::text[]) AND f.owner <> %s AND "
                "r.heartbeat_at > %s AND r.stopped_at IS NULL ORDER BY f.node_id, f.fault_key",
                (list(nodes), exclude_owner, fresh_after),
            ).fetchall()
        return [DesiredFault(*row) for row in rows]

    def record_evidence(self, evidence: Sequence[FaultEvidence]) -> None:
        """Record (and announce) each; a record older than the one stored is ignored."""
        now = time.time()
        with self._db.write() as tx:
            for e in evidence:
                tx.execute(
                    "INSERT INTO fault_evidence (node_id, owner, seq, replica, acked, version, "
                    "error, at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (node_id, "
                    "owner) DO UPDATE SET seq = excluded.seq, replica = excluded.replica, "
                    "acked = excluded.acked, version = excluded.version, error = "
                    "excluded.error, at = excluded.at WHERE fault_evidence.seq <= excluded.seq",
                    (e.node_id, e.owner, e.seq, e.replica, e.acked, e.version, e.error, now),
                )
                tx.execute("SELECT pg_notify(%s, %s)", (EVIDENCE_CHANNEL, evidence_payload(e)))

    def evidence(self, owner: str, nodes: Sequence[str]) -> list[FaultEvidence]:
        """The latest evidence for `owner`'s faults on `nodes`."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT node_id, owner, seq, replica, acked, version, error FROM "
                "fault_evidence WHERE owner = %s AND node_id = ANY(%s::text[])",
                (owner, list(nodes)),
            ).fetchall()
        return [FaultEvidence(*row) for row in rows]

    def prune(self, now: float) -> int:
        """Drop tombstones older than TOMBSTONE_SECONDS; how many."""
        with self._db.write(durable=False) as tx:
            done = tx.execute(
                "DELETE FROM fault_desired WHERE removed AND updated_at < %s",
                (now - TOMBSTONE_SECONDS,),
            )
            return done.rowcount


def evidence_payload(evidence: FaultEvidence) -> str:
    return json.dumps(evidence.__dict__, sort_keys=True)


def evidence_from_payload(payload: str) -> FaultEvidence:
    return FaultEvidence(**json.loads(payload))
