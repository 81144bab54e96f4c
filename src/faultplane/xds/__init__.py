"""The xDS side: desired resources per sidecar, the protocol (ADS for a full mesh; RTDS and
ECDS on their own services for overlay sidecars), and per-sidecar, per-stream ACK state.

Nothing in here knows about experiments; callers set resources and wait for ACKs.
"""
