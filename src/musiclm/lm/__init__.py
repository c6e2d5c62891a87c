"""Autoregressive token stages (semantic, coarse, fine) and sampling. Its classes are importable from here, so
`--model=musiclm.lm.<Class>` (LightningCLI's `class_path:`) names them."""

from musiclm.lm.module import CoarseStage, FineStage, SemanticStage

__all__ = ["CoarseStage", "FineStage", "SemanticStage"]
