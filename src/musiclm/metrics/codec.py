"""Reconstruction metrics for the codec: multi-resolution mel distance (DAC's definition) and SI-SDR.

mel_distance follows the "mel distance" column of the DAC paper: for window lengths
32..2048 samples (hop = window / 4) with 5..320 mel bands, the mean absolute difference of log10 mel
*magnitude* (clamped at 1e-5), summed over the 7 resolutions. Differences from DAC's code: our filterbank is
musiclm.audio's (HTK mel scale, Slaney area normalisation; DAC uses librosa's Slaney scale), and window lengths
are taken in samples at whatever rate the audio has (DAC measures at 44.1 kHz), so values compare closely, not
exactly, with the paper's table. The codec trains on the same distance (`MelDistance`, with its own resolutions).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn
from torchmetrics.functional.audio import scale_invariant_signal_distortion_ratio

from musiclm.audio import LogMel

WINDOWS = (32, 64, 128, 256, 512, 1024, 2048)
N_MELS = (5, 10, 20, 40, 80, 160, 320)


class MelDistance(nn.Module):
    """Multi-resolution log10-mel L1 distance between waves [B, T] (0 = identical): per resolution (window w samples,
    hop w / 4, `n_mels` bands, magnitude mel floored at 1e-5) the mean |log10 mel(ref) - log10 mel(est)|, summed
    over resolutions. Differentiable, so the codec trains on it."""

    def __init__(self, sample_rate: int, windows: Sequence[int] = WINDOWS, n_mels: Sequence[int] = N_MELS):
        super().__init__()
        if len(windows) != len(n_mels):
            raise ValueError("windows and n_mels need one entry per resolution")
        self.mels = nn.ModuleList(
            LogMel(sample_rate, w, w // 4, m, power=1.0, floor=1e-5) for w, m in zip(windows, n_mels, strict=True)
        )

    def forward(
        self, ref: torch.Tensor, est: torch.Tensor, reduction: Literal["mean", "none"] = "mean"
    ) -> torch.Tensor:
        """reduction="mean": one value, each resolution's mean taken over the whole batch (the training loss);
        "none": one value per clip [B]."""
        if ref.shape != est.shape:
            raise ValueError(f"ref {tuple(ref.shape)} and est {tuple(est.shape)} must have the same shape")
        if reduction == "mean":
            return sum((mel(ref) - mel(est)).abs().mean() for mel in self.mels) / math.log(10)  # ln -> log10
        total = ref.new_zeros(ref.shape[:-1], dtype=torch.float32)
        for mel in self.mels:
            total = total + (mel(ref) - mel(est)).abs().mean(dim=(-2, -1)) / math.log(10)
        return total


@functools.lru_cache(maxsize=4)
def _mel_distance(sample_rate: int) -> MelDistance:
    return MelDistance(sample_rate)


def mel_distance(
    ref: torch.Tensor, est: torch.Tensor, sample_rate: int, reduction: Literal["mean", "none"] = "mean"
) -> torch.Tensor:
    """DAC's mel distance between waves [B, T] (see `MelDistance`): reduction="none" returns one value per clip [B];
    "mean" their mean."""
    per_clip = _mel_distance(sample_rate)(ref, est, reduction="none")
    return per_clip.mean() if reduction == "mean" else per_clip


def si_sdr_db(ref: torch.Tensor, est: torch.Tensor, reduction: Literal["mean", "none"] = "mean") -> torch.Tensor:
    """Scale-invariant signal-to-distortion ratio in dB of `est` against `ref` ([B, T]; zero-mean, as in DAC)."""
    v = scale_invariant_signal_distortion_ratio(est.float(), ref.float(), zero_mean=True)
    return v.mean() if reduction == "mean" else v


@functools.lru_cache(maxsize=4)
def _dependence_mel(sample_rate: int) -> LogMel:
    # 1024-sample windows (notes and onsets, not the finest detail), floor -60 dB: bins near silence would otherwise
    # dominate the L1 and pull every ratio towards 1
    return LogMel(sample_rate, 1024, 256, 80, power=1.0, floor=1e-3)


def input_dependence(ref: torch.Tensor, est: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """How much reconstructions [B, T] depend on their own input: mean log-mel L1 from each reconstruction to the
    *other* references over the mean to its own (1 = output ignores its input, the "average spectrum" failure a
    young codec falls into; higher = more input-specific). Needs B >= 2."""
    if ref.shape != est.shape or ref.shape[0] < 2:
        raise ValueError(f"need equal shapes with at least 2 clips, got {tuple(ref.shape)} and {tuple(est.shape)}")
    mel = _dependence_mel(sample_rate).to(ref.device)
    r, e = mel(ref), mel(est)
    dist = (e[:, None] - r[None]).abs().mean(dim=(-2, -1))  # [est, ref]
    n = len(dist)
    own = dist.diagonal().mean()
    return ((dist.sum() - dist.diagonal().sum()) / (n * n - n)) / own.clamp_min(1e-8)
