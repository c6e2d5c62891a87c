"""Tempo of a clip from onset autocorrelation, and how often generated clips follow the requested tempo.

Estimator: spectral flux of compressed mel power (log(1 + C x), 10 ms hop) -> onset envelope -> biased
autocorrelation over the lags of `min_bpm..max_bpm` -> weighted by a log-normal tempo prior (centre 120 BPM, one
octave wide, as in most beat trackers) -> peak, refined by parabolic interpolation. A periodic envelope
correlates at every multiple of its period, so the prior alone would fold fast pieces to half tempo; an octave
check then takes the double tempo whenever the autocorrelation at half the lag is at least 0.7 as high, i.e.
when the off-beat onsets are about as regular as the beats (a click or drum track at 190 BPM stays at 190, a
70 BPM piece with quiet eighth-note hats stays at 70). The 0.7 was chosen on 60 clips of the synthetic corpus
and checked on 30 others (0.5 gave 72/90 within 5%, 0.7 gave 75/90); the remaining misses are octave-type.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from musiclm.audio import log_mel


def onset_envelope(
    wave: torch.Tensor, sample_rate: int, n_mels: int = 64, compression: float = 1000.0
) -> tuple[torch.Tensor, float]:
    """Onset strength [frames] (mean positive flux of compressed mel power, local mean removed, lightly smoothed)
    and its frame rate in Hz."""
    hop = round(sample_rate / 100)
    n_fft = 2 ** round(math.log2(0.046 * sample_rate))
    mel = log_mel(wave.float(), sample_rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels)  # [n_mels, frames]
    # log(1 + C x) compression of mel power relative to the clip's peak: loud onsets outweigh quiet ones, and
    # noise near silence (which plain log amplifies) adds nothing.
    power = torch.exp(mel - mel.max())
    mag = torch.log1p(compression * power)
    flux = (mag[:, 1:] - mag[:, :-1]).clamp(min=0).mean(0)
    local_mean = F.avg_pool1d(flux[None, None], 41, stride=1, padding=20, count_include_pad=False)[0, 0]
    flux = (flux - local_mean).clamp(min=0)
    # a 20 ms Gaussian blur: periods that fall between frames then still give one clean autocorrelation peak
    g = torch.exp(-0.5 * (torch.arange(-4, 5, dtype=flux.dtype) / 2.0) ** 2)
    flux = F.conv1d(flux[None, None], (g / g.sum())[None, None], padding=4)[0, 0]
    return flux, sample_rate / hop


def estimate_tempo(
    wave: np.ndarray | torch.Tensor,
    sample_rate: int,
    min_bpm: float = 50.0,
    max_bpm: float = 200.0,
    prior_bpm: float = 120.0,
    prior_octaves: float = 1.0,
    double_ratio: float = 0.7,
) -> float:
    """Tempo in BPM of one mono clip [T]; NaN when the clip has no onsets (silence, a drone)."""
    env, rate = onset_envelope(torch.as_tensor(wave).reshape(-1), sample_rate)
    env = env.double() - env.double().mean()
    n = len(env)
    if n < 4 or env.abs().max() == 0:
        return math.nan
    spec = torch.fft.rfft(env, n=2 * n)
    ac = torch.fft.irfft(spec.abs().square())[:n] / n  # biased autocorrelation
    lags = torch.arange(n, dtype=torch.float64)
    bpm = 60 * rate / lags.clamp(min=1)
    valid = (bpm >= min_bpm) & (bpm <= max_bpm) & (lags >= 1)
    if not valid.any() or ac[0] <= 0:
        return math.nan
    prior = torch.exp(-0.5 * (torch.log2(bpm / prior_bpm) / prior_octaves) ** 2)
    score = torch.where(valid, ac.clamp(min=0) * prior, torch.full_like(ac, -1.0))
    k = int(score.argmax())
    if score[k] <= 0:
        return math.nan
    # octave check: a periodic envelope peaks at every multiple of its period, so also test half the lag
    # (double tempo); it wins when its onsets are at least `double_ratio` as regular as the chosen ones
    half = round(k / 2)
    while valid[half] and ac[half - 1 : half + 2].max() >= double_ratio * ac[k]:
        k = half - 1 + int(ac[half - 1 : half + 2].argmax())
        half = round(k / 2)
    lag = float(k)
    if 0 < k < n - 1:  # parabolic refinement of the autocorrelation peak
        a, b, c = (float(ac[i]) for i in (k - 1, k, k + 1))
        denom = a - 2 * b + c
        if denom < 0:
            lag += 0.5 * (a - c) / denom
    return 60 * rate / lag


class TempoAdherence(Metric):
    """Fraction of generated clips whose estimated tempo is within `tolerance` (relative) of the requested one.

    compute() -> {"adherence", "chance"}: chance is the same rate over all (clip, other prompt's target) pairs,
    i.e. the adherence expected when targets are shuffled, so adherence above chance means tempo is followed.
    Clips whose target is NaN are skipped; clips with no detectable tempo count as misses.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, sample_rate: int | None = None, tolerance: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.sample_rate, self.tolerance = sample_rate, tolerance
        self.add_state("estimate", [], dist_reduce_fx="cat")
        self.add_state("target", [], dist_reduce_fx="cat")

    def update(
        self, waves: torch.Tensor | list, target_bpm: torch.Tensor | list, sample_rate: int | None = None
    ) -> None:
        sr = sample_rate or self.sample_rate
        if sr is None:
            raise ValueError("TempoAdherence needs a sample_rate (constructor or update)")
        target = torch.as_tensor(target_bpm, dtype=torch.float64).reshape(-1)
        if len(waves) != len(target):
            raise ValueError(f"{len(waves)} clips but {len(target)} target tempos")
        keep = torch.isfinite(target)
        est = [estimate_tempo(w, sr) for w, k in zip(waves, keep, strict=True) if k]
        self.estimate.append(torch.tensor(est, dtype=torch.float64))
        self.target.append(target[keep])

    def compute(self) -> dict[str, torch.Tensor]:
        est, tgt = dim_zero_cat(self.estimate), dim_zero_cat(self.target)
        hit = (est[:, None] - tgt[None, :]).abs() <= self.tolerance * tgt[None, :]  # [clip, target]; NaN -> miss
        n = len(est)
        adherence = hit.diagonal().double().mean()
        chance = (hit.sum() - hit.diagonal().sum()).double() / (n * (n - 1)) if n > 1 else torch.tensor(math.nan)
        return {"adherence": adherence.float(), "chance": torch.as_tensor(chance).float()}
