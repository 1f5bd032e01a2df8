"""etran metric (being written)."""
