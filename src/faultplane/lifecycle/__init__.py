"""The injection lifecycle: admission, arming, activation, deadline, withdrawal.

Knows nothing about protobuf wire details: it tells the delivery side which faults each
sidecar should carry and waits for the sidecars' ACKs.
"""
