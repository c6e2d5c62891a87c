"""Codec losses: multi-resolution mel reconstruction, hinge adversarial, relative feature matching."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from musiclm.audio import LogMel


class MultiResolutionMelLoss(nn.Module):
    """Sum over resolutions of the mean |log10 mel(x) - log10 mel(y)| (magnitude mel, floor 1e-5): the training
    form of the val metric `musiclm.metrics.codec.mel_distance`, with configurable windows (hop = window / 4)."""

    def __init__(self, sample_rate: int, windows: list[int], n_mels: list[int]):
        super().__init__()
        if len(windows) != len(n_mels):
            raise ValueError("windows and n_mels need one entry per resolution")
        self.mels = nn.ModuleList(LogMel(sample_rate, w, w // 4, m, power=1.0, floor=1e-5) for w, m in zip(windows, n_mels))

    def forward(self, ref: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
        return sum((mel(ref) - mel(est)).abs().mean() for mel in self.mels) / math.log(10)


def discriminator_hinge(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """Mean over sub-discriminators of E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]."""
    return sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real, fake)) / len(real)


def generator_hinge(fake: list[torch.Tensor]) -> torch.Tensor:
    """SoundStream's generator side: E[relu(1 - D(G(z)))], averaged over sub-discriminators."""
    return sum(F.relu(1 - f).mean() for f in fake) / len(fake)


def feature_matching(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """L1 between discriminator features of real and reconstructed audio, relative to the real features' scale
    (so layers of different magnitude weigh alike); real features are targets (no gradient)."""
    terms = [
        (f - r.detach()).abs().mean() / (r.detach().abs().mean() + 1e-8)
        for rs, fs in zip(real, fake)
        for r, f in zip(rs, fs)
    ]
    return sum(terms) / len(terms)
