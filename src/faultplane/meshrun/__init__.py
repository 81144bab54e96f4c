"""Running the demo mesh on one machine: app processes, real Envoy sidecars, load."""
