"""gbc metric (being written)."""
