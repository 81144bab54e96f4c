"""The operator API: validation and authorisation at the edge, then the scheduler."""
