"""leep metric (being written)."""
