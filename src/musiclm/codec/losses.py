"""Codec losses: multi-resolution mel reconstruction, hinge adversarial, relative feature matching."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from musiclm.metrics.codec import MelDistance


class MultiResolutionMelLoss(MelDistance):
    """The val metric's mel distance (`musiclm.metrics.codec.MelDistance`) as the reconstruction loss, over the
    configured resolutions (hop = window / 4) and averaged over the batch: training and validation measure alike."""


def discriminator_hinge(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """Mean over sub-discriminators of E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]."""
    return sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real, fake, strict=True)) / len(real)


def generator_hinge(fake: list[torch.Tensor]) -> torch.Tensor:
    """SoundStream's generator side: E[relu(1 - D(G(z)))], averaged over sub-discriminators."""
    return sum(F.relu(1 - f).mean() for f in fake) / len(fake)


def feature_matching(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """L1 between discriminator features of real and reconstructed audio, relative to the real features' scale
    (so layers of different magnitude weigh alike); real features are targets (no gradient)."""
    terms = [
        (f - r.detach()).abs().mean() / (r.detach().abs().mean() + 1e-8)
        for rs, fs in zip(real, fake, strict=True)
        for r, f in zip(rs, fs, strict=True)
    ]
    return sum(terms) / len(terms)
