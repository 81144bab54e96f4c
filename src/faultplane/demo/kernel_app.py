"""The kernel demo's app: a pod that queries its database, and says how that goes.

`python -m faultplane.demo.kernel_app --netns POD --url URL --port P` (root). Worker
threads join the pod's network namespace and run `SELECT 1` against the database over
libpq, each on one connection (reopened after a failure), at a steady pace. A query that
fails counts as an error; libpq's `tcp_user_timeout` and `connect_timeout` bound how long
a dead link can hold one, so a partition shows as failures within seconds, not hangs.

It serves, on 127.0.0.1:P (the host's loopback, not the pod's):
- `/stats/prometheus`: its queries as Envoy's HTTP counters, under the stat prefix `db`
  (`envoy_http_downstream_rq_completed`, `_xx` with class 5 for failures, and the
  `_time` histogram), so faultplane's envoy SLO source reads the pod like a sidecar;
- `/summary?since=EPOCH[&until=EPOCH]`: JSON count, ok, p50_ms, p99_ms of the queries
  that ended in that span.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import psycopg

from faultplane.demo.netns import enter
from faultplane.slo.quantile import quantile
from faultplane.slo.sources import ENVOY_BUCKETS

WORKERS = 4
PACE_SECONDS = 0.05  # per worker: about 80 queries a second in all
PREFIX = "db"
KEEP = 100_000  # queries remembered for summaries


class Tally:
    """Every query's outcome: counters for the stats page, recent ones for summaries."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.completed = 0
        self.failed = 0
        self.buckets = [0] * (len(ENVOY_BUCKETS) + 1)  # the last: +Inf
        self.recent: deque[tuple[float, bool, float]] = deque(maxlen=KEEP)

    def add(self, ok: bool, ms: float) -> None:
        with self._lock:
            self.completed += 1
            self.failed += not ok
            for index, bound in enumerate((*ENVOY_BUCKETS, float("inf"))):
                if ms <= bound:
                    self.buckets[index] += 1
            self.recent.append((time.time(), ok, ms))

    def stats(self) -> str:
        """The counters in Envoy's Prometheus text form."""
        label = f'envoy_http_conn_manager_prefix="{PREFIX}"'
        with self._lock:
            lines = [
                "# TYPE envoy_http_downstream_rq_completed counter",
                f"envoy_http_downstream_rq_completed{{{label}}} {self.completed}",
                "# TYPE envoy_http_downstream_rq_xx counter",
                f'envoy_http_downstream_rq_xx{{envoy_response_code_class="2",{label}}} '
                f"{self.completed - self.failed}",
                f'envoy_http_downstream_rq_xx{{envoy_response_code_class="5",{label}}} '
                f"{self.failed}",
                "# TYPE envoy_http_downstream_rq_time histogram",
            ]
            for bound, count in zip((*ENVOY_BUCKETS, "+Inf"), self.buckets, strict=True):
                le = bound if isinstance(bound, str) else f"{bound:g}"
                lines.append(f'envoy_http_downstream_rq_time_bucket{{{label},le="{le}"}} {count}')
            lines.append(f"envoy_http_downstream_rq_time_count{{{label}}} {self.completed}")
        return "\n".join(lines) + "\n"

    def summary(self, since: float, until: float) -> dict[str, float | int | None]:
        """The queries that ended between `since` and `until` (epoch seconds)."""
        with self._lock:
            picked = [(ok, ms) for at, ok, ms in self.recent if since <= at <= until]
        ok_ms = sorted(ms for ok, ms in picked if ok)
        return {
            "queries": len(picked),
            "ok": len(ok_ms),
            "p50_ms": quantile(ok_ms, 0.5, 1),
            "p99_ms": quantile(ok_ms, 0.99, 1),
        }


def worker(netns: str, url: str, tally: Tally, stop: threading.Event) -> None:
    """One connection's worth of queries, from inside the pod's namespace."""
    enter(netns)
    conn: psycopg.Connection[tuple[int]] | None = None
    while not stop.is_set():
        started = time.monotonic()
        try:
            if conn is None:
                conn = psycopg.connect(
                    url, autocommit=True, connect_timeout=2, tcp_user_timeout=1500
                )
            conn.execute("SELECT 1").fetchone()
            tally.add(True, (time.monotonic() - started) * 1000)
        except psycopg.Error:
            tally.add(False, (time.monotonic() - started) * 1000)
            if conn is not None:
                conn.close()
            conn = None
        stop.wait(max(0.0, PACE_SECONDS - (time.monotonic() - started)))
    if conn is not None:
        conn.close()


def serve(tally: Tally, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path == "/stats/prometheus":
                body, kind = tally.stats().encode(), "text/plain"
            elif url.path == "/summary":
                query = parse_qs(url.query)
                since = float(query.get("since", ["0"])[0])
                until = float(query.get("until", ["inf"])[0])
                body = json.dumps(tally.summary(since, until)).encode()
                kind = "application/json"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # the guard reads every half second: no line per read

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--netns", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    tally, stop = Tally(), threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = serve(tally, args.port)
    threads = [
        threading.Thread(target=worker, args=(args.netns, args.url, tally, stop), daemon=True)
        for _ in range(WORKERS)
    ]
    for thread in threads:
        thread.start()
    print(f"kernel app: {WORKERS} workers in {args.netns}, stats on :{args.port}", flush=True)
    stop.wait()
    server.shutdown()


if __name__ == "__main__":
    main()
