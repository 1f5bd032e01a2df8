"""transrate metric (being written)."""
