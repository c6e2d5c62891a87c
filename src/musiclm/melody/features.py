"""The melody model's front end: a semitone-spaced magnitude spectrogram (a cheap constant-Q transform from one
STFT), log-compressed and standardised per window so loudness and gain carry no information."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def semitone_filterbank(sample_rate: int, n_fft: int, midi_lo: int, n_bins: int) -> torch.Tensor:
    """`[n_fft // 2 + 1, n_bins]`: each STFT bin shares its energy between the two nearest semitones (a triangle one
    semitone wide); a semitone too narrow to hold a bin (low notes) takes its nearest bin, so no row is empty."""
    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    midi = 69 + 12 * np.log2(np.maximum(freqs, 1e-3) / 440.0)
    pitches = midi_lo + np.arange(n_bins)
    fb = np.maximum(0.0, 1.0 - np.abs(midi[:, None] - pitches[None, :]))
    fb[0] = 0.0
    for j, p in enumerate(pitches):
        if fb[:, j].sum() == 0:
            fb[int(np.argmin(np.abs(freqs - 440.0 * 2 ** ((p - 69) / 12)))), j] = 1.0
    return torch.from_numpy(fb).float()


class SemitoneSpectrogram(nn.Module):
    """wave `[..., T]` -> `[..., frames, n_bins]` log semitone magnitudes (centred frames: T // hop + 1)."""

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, midi_lo: int, n_bins: int):
        super().__init__()
        self.sample_rate, self.n_fft, self.hop_length = sample_rate, n_fft, hop_length
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("fb", semitone_filterbank(sample_rate, n_fft, midi_lo, n_bins), persistent=False)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        shape = wave.shape
        x = wave.reshape(-1, shape[-1]).float()
        spec = torch.stft(x, self.n_fft, self.hop_length, window=self.window, center=True, return_complex=True)
        out = torch.log(spec.abs().transpose(1, 2) @ self.fb + 1e-4)  # [B, frames, bins]
        out = (out - out.mean(dim=(1, 2), keepdim=True)) / out.std(dim=(1, 2), keepdim=True).clamp(min=1e-4)
        return out.reshape(*shape[:-1], *out.shape[1:])
