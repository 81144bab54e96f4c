"""Readable tables for the CLI (scripts use --json)."""

from __future__ import annotations

from collections.abc import Sequence

from faultplane.v1 import faultplane_pb2 as pb


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows, strict=False)]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(
            str(cell).ljust(width) for cell, width in zip(line, widths, strict=False)
        ).rstrip()
        for line in lines
    )


def sidecars_table(sidecars: Sequence[pb.Sidecar]) -> str:
    xds_types = ("cds", "eds", "lds", "rds", "rtds")
    rows = []
    for sidecar in sidecars:
        acked = {status.type: status.version_acked or "-" for status in sidecar.xds}
        errors = "; ".join(f"{s.type}: {s.last_error}" for s in sidecar.xds if s.last_error)
        rows.append(
            [
                sidecar.node_id,
                sidecar.service,
                ",".join(f"{k}={v}" for k, v in sorted(sidecar.labels.items())),
                "yes" if sidecar.connected else "no",
                *(acked.get(t, "-") for t in xds_types),
                errors or "-",
            ]
        )
    headers = ["SIDECAR", "SERVICE", "LABELS", "CONNECTED", *(t.upper() for t in xds_types)]
    return table([*headers, "LAST NACK"], rows)
