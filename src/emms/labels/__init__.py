"""emms.labels (being written)."""
