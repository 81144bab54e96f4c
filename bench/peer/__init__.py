"""sovereign's configuration and templates for the peer scenario (bench.scenarios.peer)."""
