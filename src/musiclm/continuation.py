"""Audio continuation (AudioLM): a given recording is tokenized by the run's own producers, semantic and
acoustic, and generation continues from those tokens, so the output starts with the prompt's tokens."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from musiclm.audio import resample_batch


def prompt_tokens(semantic_tokenizer, codec, wave: Tensor, sample_rate: int, semantic_rate: float,
                  acoustic_rate: float) -> dict[str, Tensor]:  # fmt: skip
    """`wave` `[T]` or `[B, T]` at `sample_rate` -> `semantic` `[B, Ts]` and `acoustic` `[B, Q, Ta]` token
    prompts cut to the same span: `Ts` whole semantic frames and the `round(Ts * ratio)` acoustic frames they
    cover, as the coarse stage aligns them in training."""
    wave = torch.as_tensor(wave, dtype=torch.float32)
    wave = wave[None] if wave.ndim == 1 else wave
    if wave.ndim != 2 or wave.shape[-1] == 0:
        raise ValueError(f"prompt audio must be mono samples [T] or [B, T], got shape {tuple(wave.shape)}")
    sem = semantic_tokenizer.tokenize(resample_batch(wave, sample_rate, semantic_tokenizer.sample_rate))
    codes = codec.tokenize(resample_batch(wave, sample_rate, codec.sample_rate).to(codec.device))
    ratio = acoustic_rate / semantic_rate
    n_sem = min(sem.shape[-1], math.floor(codes.shape[-1] / ratio + 1e-6))
    if n_sem < 1:
        raise ValueError(f"prompt audio of {wave.shape[-1] / sample_rate:.3f} s is shorter than one semantic frame")
    return {"semantic": sem[:, :n_sem].long(), "acoustic": codes[..., : round(n_sem * ratio)].long()}
