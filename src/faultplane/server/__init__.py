"""Composition: builds every part of the control server from its config, starts and stops them."""
