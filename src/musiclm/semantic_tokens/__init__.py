"""Semantic tokens: self-supervised features + k-means."""
