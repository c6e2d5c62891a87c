"""Autoregressive token stages (semantic, coarse, fine) and sampling."""
