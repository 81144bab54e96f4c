"""One module per scenario; `bench.cli.SCENARIOS` lists them in the issue's order."""
