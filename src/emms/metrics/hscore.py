"""hscore metric (being written)."""
