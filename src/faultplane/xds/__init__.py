"""The xDS side: desired resources per sidecar, the ADS protocol, and per-sidecar ACK state.

Nothing in here knows about experiments; callers set resources and wait for ACKs.
"""
