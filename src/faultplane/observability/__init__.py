"""The control server's own metrics and logs (a leaf: everything may use it)."""
