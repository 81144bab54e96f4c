"""Fault kinds: one module each (latency, abort, bandwidth, partition), registered in `registry`.

A kind parses and validates its fields from the request, renders itself onto a fault
slot and describes itself for tables. Adding a kind is its module plus one
`register(...)` line in `registry.py` (and its tests); the API, rendering and the CLI
find it there.
"""
