"""Prometheus metrics of the control server, served on the metrics port.

Defined once per process (prometheus-client registries are process-global), labelled by
xDS type so a NACK storm on one type is visible at a glance.
"""

from prometheus_client import Counter, Gauge, Histogram

SIDECARS_CONNECTED = Gauge(
    "faultplane_sidecars_connected", "Sidecars with at least one open xDS stream."
)
XDS_RESPONSES = Counter(
    "faultplane_xds_responses_sent", "DiscoveryResponses sent to sidecars.", ["type"]
)
XDS_ACKS = Counter("faultplane_xds_acks", "DiscoveryResponses ACKed by sidecars.", ["type"])
XDS_NACKS = Counter("faultplane_xds_nacks", "DiscoveryResponses NACKed by sidecars.", ["type"])
XDS_PUSH_TO_ACK = Histogram(
    "faultplane_xds_push_to_ack_seconds",
    "Time from sending a DiscoveryResponse to the sidecar's ACK or NACK.",
    ["type"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
STORE_ERRORS = Counter(
    "faultplane_store_errors",
    "Store writes that failed (each retry counts); faults are withdrawn regardless.",
    ["what"],
)
WATCH_DROPPED = Counter(
    "faultplane_watch_dropped",
    "Watch subscribers (WatchInjections streams) dropped for falling too far behind.",
)
XDS_REQUESTS_THROTTLED = Counter(
    "faultplane_xds_requests_throttled",
    "Times an ADS stream stopped reading because its request backlog was full "
    "(a peer sending faster than the server handles its requests).",
)
NOTIFICATIONS = Counter(
    "faultplane_notifications",
    "Notifications (serve --notify) by outcome: delivered; retried (an attempt failed, "
    "another follows); failed (every attempt failed, audited); dropped (the queue was "
    "full, the oldest was dropped, audited).",
    ["outcome"],
)
for _outcome in ("delivered", "retried", "failed", "dropped"):
    NOTIFICATIONS.labels(_outcome)  # reported at 0 from the start, for alerts
