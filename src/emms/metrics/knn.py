"""knn metric (being written)."""
