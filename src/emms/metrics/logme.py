"""logme metric (being written)."""
