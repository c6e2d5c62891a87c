"""MusicLM training stack: every stage of text-to-music as a Lightning module."""

__version__ = "0.1.0"
