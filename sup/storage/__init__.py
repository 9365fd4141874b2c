"""Backends for persistent state. Chosen by URL; see `open_database`."""
