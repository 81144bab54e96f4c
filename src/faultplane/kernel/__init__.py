"""Kernel-level network faults: what a node agent puts in nftables for the pods it hosts.

Pure data and rendering only (`fault`, `kinds`, `ruleset`); the agent (`faultplane.agent`)
runs the rendered text through nft. The generated messages of the agent's xDS resource
type live in `faultplane.kernel.v1`.
"""
