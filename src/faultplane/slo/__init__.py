"""Steady state: what an SLO is, how it is read (Envoy stats or Prometheus), its baseline.

A leaf package: it knows sidecars only as admin addresses and pod names.
"""
