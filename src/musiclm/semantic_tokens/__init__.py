"""Semantic tokens: self-supervised features + k-means. Its classes are importable from here, so
`--model=musiclm.semantic_tokens.<Class>` (LightningCLI's `class_path:`) names them."""

from musiclm.semantic_tokens.module import SemanticTokenizer

__all__ = ["SemanticTokenizer"]
