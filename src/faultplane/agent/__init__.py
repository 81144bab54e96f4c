"""The node agent: applies the kernel faults the control server sends over xDS to the
network namespaces of the pods it hosts, and guarantees they go when it or the server dies.

`pods` (what it hosts), `capabilities` (what the kernel can do), `nft` (one long-lived
`nft -i` per namespace, owner of its table), `rules` (desired faults, leases, apply),
`xds_client` (the SotW stream: ACK once in the kernel, NACK with nft's message),
`command` (`faultplane agent`).
"""
