"""Melody windows: 4-s windows every 3 s (the paper's), the one place that says which audio a melody token covers.

Window k covers seconds `[k * hop, k * hop + window)`. A clip has `num_windows` of them: every window that fits,
and at least one (a clip shorter than a window is zero-padded), so 8 s gives windows at 0 and 3 s, 10 s at 0, 3, 6.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def num_windows(seconds: float, window: float, hop: float) -> int:
    return 1 + max(0, int((seconds - window) // hop + 1e-9))


def split_windows(wave: torch.Tensor, sample_rate: int, window: float, hop: float) -> torch.Tensor:
    """wave `[B, T]` -> `[B, W, window * sample_rate]`."""
    n, step = round(window * sample_rate), round(hop * sample_rate)
    count = num_windows(wave.shape[-1] / sample_rate, window, hop)
    wave = F.pad(wave, (0, max(0, (count - 1) * step + n - wave.shape[-1])))
    return wave.unfold(-1, n, step)[:, :count]
