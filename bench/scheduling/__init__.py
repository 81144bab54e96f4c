"""The scheduling simulation: faultplane's packing vs serial vs the FIS rule (main.py)."""
