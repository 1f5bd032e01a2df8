"""sfda metric (being written)."""
