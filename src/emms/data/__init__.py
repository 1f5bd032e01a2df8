"""emms.data (being written)."""
