"""emms.evaluate (being written)."""
