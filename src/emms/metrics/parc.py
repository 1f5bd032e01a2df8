"""parc metric (being written)."""
