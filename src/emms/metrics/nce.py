"""nce metric (being written)."""
