"""emms.models (being written)."""
