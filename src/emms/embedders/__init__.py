"""emms.embedders (being written)."""
