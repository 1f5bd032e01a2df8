"""emms metric (being written)."""
