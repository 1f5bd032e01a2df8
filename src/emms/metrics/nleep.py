"""nleep metric (being written)."""
