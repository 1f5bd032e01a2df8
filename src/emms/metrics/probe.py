"""probe metric (being written)."""
