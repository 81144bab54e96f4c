"""faultplane benchmarks: how fast and how far, side by side with a peer (issue 6).

`python -m bench [SCENARIO ...] [--quick]`; see bench/README.md.
"""
