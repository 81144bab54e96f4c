"""How faults reach sidecars: fault slots and leases, the desired resources per sidecar."""
