"""The `faultplane` command: parser, injection and governance commands, tables, connection."""
