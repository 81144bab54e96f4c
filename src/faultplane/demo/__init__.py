"""The local demo mesh (app, load generator, bootstraps, launcher) and the demo's stories."""
