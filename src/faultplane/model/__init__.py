"""The domain model: the mesh, an injection's spec and state, target selection.

Pure data and pure functions; every other part depends on it, it depends on none.
"""
