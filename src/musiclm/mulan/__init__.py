"""MuLan: contrastive audio/text towers and the MuLan-token quantizer. Its classes are importable from here, so
`--model=musiclm.mulan.<Class>` (LightningCLI's `class_path:`) names them."""

from musiclm.mulan.module import MuLanModule

__all__ = ["MuLanModule"]
