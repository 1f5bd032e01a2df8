"""pactran metric (being written)."""
