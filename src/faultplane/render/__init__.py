"""Pure rendering: the mesh model and faults to Envoy resources. No I/O, no state."""
