"""SoundStream-style residual-VQ codec: its codes are the acoustic tokens. Its classes are importable from here, so
`--model=musiclm.codec.<Class>` (LightningCLI's `class_path:`) names them."""

from musiclm.codec.module import CodecModule

__all__ = ["CodecModule"]
