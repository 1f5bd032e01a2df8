"""ncti metric (being written)."""
