"""The melody encoder: semitone frames -> a transformer (x-transformers) -> mean over time -> a unit vector."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from x_transformers import Encoder

from musiclm.melody.features import SemitoneSpectrogram


class MelodyEncoder(nn.Module):
    """wave windows `[N, T]` -> embeddings `[N, embed_dim]`, L2-normalised."""

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, midi_lo: int, n_bins: int, dim: int, depth: int,
                 heads: int, embed_dim: int, dropout: float):  # fmt: skip
        super().__init__()
        self.features = SemitoneSpectrogram(sample_rate, n_fft, hop_length, midi_lo, n_bins)
        self.inp = nn.Linear(n_bins, dim)
        self.encoder = Encoder(dim=dim, depth=depth, heads=heads, rotary_pos_emb=True, attn_dropout=dropout,
                               ff_dropout=dropout)  # fmt: skip
        self.out = nn.Linear(dim, embed_dim)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = self.encoder(self.inp(self.features(wave)))
        return F.normalize(self.out(x.mean(dim=1)), dim=-1)
