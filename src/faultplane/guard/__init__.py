"""The steady-state guard: reads each ACTIVE injection's SLO and aborts on a breach."""
