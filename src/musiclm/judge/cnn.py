"""The tagger's network: a small 2-D CNN over log-mel with three heads (lead family, drums, families present).

Deliberately unlike MuLan's audio tower (a patch transformer trained contrastively against text): convolutions,
supervised cross-entropy, no text. Each clip's log-mel is shifted to zero mean, so loudness (a gain is an offset in
log space) carries no label; pooling over frequency then time (mean and max) takes any clip length.
"""

from __future__ import annotations

import torch
from torch import nn


def _block(c_in: int, c_out: int) -> nn.Sequential:
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2))


class TaggerCNN(nn.Module):
    """log-mel [B, n_mels, frames] -> {"family": [B, F] logits, "drums": [B, 2] logits, "presence": [B, F] logits}."""

    def __init__(self, num_families: int, channels: tuple[int, ...] = (32, 64, 128, 128), dropout: float = 0.2):
        super().__init__()
        widths = (1, *channels)
        self.features = nn.Sequential(*(_block(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)))
        self.dropout = nn.Dropout(dropout)
        width = 2 * channels[-1]
        self.family = nn.Linear(width, num_families)
        self.drums = nn.Linear(width, 2)
        self.presence = nn.Linear(width, num_families)

    def forward(self, mel: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (mel - mel.mean(dim=(-2, -1), keepdim=True))[:, None]
        x = self.features(x).mean(dim=2)  # [B, C, frames']
        x = self.dropout(torch.cat([x.mean(-1), x.amax(-1)], dim=-1))
        return {"family": self.family(x), "drums": self.drums(x), "presence": self.presence(x)}
