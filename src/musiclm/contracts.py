"""The roles a stage implementation plays, declared once. Any class with these members plugs into the chain.

Every token producer speaks one vocabulary: `sample_rate` (Hz of the audio it reads; callers resample to it),
`frame_rate` (tokens per second along time), `num_levels` (tokens per frame: residual levels, 1 for k-means),
`codebook_size` (ids per level) and `tokenize(wave)`. `musiclm tokenize` drives all of them through that vocabulary
alone and records each stream's sizes and rate in the token manifest, from which the LM stages size themselves.

Shapes: B batch, T samples, F frames, Q levels, D embedding width. Waves are float, codes are LongTensor.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class TokenProducer(Protocol):
    """Audio -> discrete tokens, in eval mode and deterministic."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def num_levels(self) -> int: ...

    @property
    def codebook_size(self) -> int: ...

    def tokenize(self, wave: Tensor) -> Tensor:
        """wave [B, T] at `sample_rate` -> LongTensor ids in [0, codebook_size); the shape is the role's."""
        ...


@runtime_checkable
class AudioTokenizer(TokenProducer, Protocol):
    """The codec's role: acoustic tokens that decode back to audio (SoundStream, EnCodec, DAC).

    `tokenize(wave)` is `encode(wave)` with every level: [B, Q, F], F = ceil(T * frame_rate / sample_rate).
    `decode(codes)` takes [B, Q', F] with Q' <= num_levels (fewer levels = lower bitrate) and returns at least
    F * sample_rate / frame_rate samples [B, T'], so `decode(encode(x))[..., :T]` is the reconstruction of x.
    """

    @property
    def frame_rate(self) -> float: ...

    def encode(self, wave: Tensor, num_levels: int | None = None) -> Tensor: ...

    def decode(self, codes: Tensor) -> Tensor: ...


@runtime_checkable
class ConditionEncoder(TokenProducer, Protocol):
    """MuLan's role: audio and text in one L2-normalised space, quantized into per-clip condition tokens.

    `embed_audio(wave [B, T]) -> [B, D]`, `embed_text(list of B str) -> [B, D]`; `tokenize(wave) -> [B, Q]` and
    `tokens_from_text(texts) -> [B, Q]` go through the same quantizer table, so training (audio tokens) and
    inference (text tokens) condition the LMs on the same ids.
    """

    def embed_audio(self, wave: Tensor) -> Tensor: ...

    def embed_text(self, texts: list[str]) -> Tensor: ...

    def tokens_from_text(self, texts: list[str]) -> Tensor: ...


@runtime_checkable
class SemanticTokenizer(TokenProducer, Protocol):
    """Semantic tokens: one id per frame of a self-supervised model's features (`num_levels` == 1).

    `tokenize(wave [B, T]) -> [B, F]` with F = round(T * frame_rate / sample_rate)."""

    @property
    def frame_rate(self) -> float: ...


@runtime_checkable
class TokenBackbone(Protocol):
    """The decoder behind every LM stage (`musiclm.lm.backbones` builds one by name).

    `forward(ids [B, N, K], cache=None) -> (logits [B, N, sum(head_sizes)], cache)`: without a cache the whole
    sequence; with one, `ids` holds only the steps after the cached ones, one or many (a prompt's prefill), and the
    logits equal the uncached forward's. A cache may be updated in place (`TokenLM`'s is): pass each one on once,
    never branch two continuations from it. `block_types()` names the module classes
    that FSDP shards and activation checkpointing recomputes one by one."""

    head_sizes: list[int]

    def forward(self, ids: Tensor, cache: object | None = None) -> tuple[Tensor, object]: ...

    def slot_logits(self, logits: Tensor, head_index: Tensor, codebook_size: int) -> Tensor: ...

    def block_types(self) -> tuple[type[torch.nn.Module], ...]: ...


def stream_spec(producer: TokenProducer) -> dict[str, float | int]:
    """What the token manifest records of a stream, read through the shared vocabulary only."""
    spec: dict[str, float | int] = {"levels": producer.num_levels, "codebook_size": producer.codebook_size}
    rate = getattr(producer, "frame_rate", None)
    if rate is not None:
        spec["rate"] = float(rate)
    return spec
