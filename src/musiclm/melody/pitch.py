"""Pitch-class melody tokens: each frame's strongest pitch class read off the spectrum, with no model to train
(MusicGen's chroma condition, as tokens). The alternative to the learned melody embedding (`module.MelodyModule`):
that one gives a column per 4-s window, which cannot spell out a melody's notes; these give `frame_rate` columns a
second, one id each, 12 pitch classes plus one for frames with no pitch.

`musiclm melody pitch-classes --run R` (`make train-melody MELODY_TOKENS=pitch`) writes the run's melody hand-off,
so tokenize, the LM stages and `generate(melody=)` read it like the learned model's.
"""

from __future__ import annotations

import argparse

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from musiclm.artifacts import atomic_torch_save, handoff, model_path
from musiclm.melody.features import semitone_filterbank

PITCH_CLASSES = 12
NO_PITCH = PITCH_CLASSES  # the id of a frame with no pitch (quieter than `quiet_db` below the clip's loudest)


class PitchClassMelody(L.LightningModule):
    """A token producer (`contracts.TokenProducer`): wave `[B, T]` -> `[B, 1, frames]` pitch-class ids.

    The semitone bins span `midi_lo` .. `midi_lo + n_bins - 1`: the default C3..B6 leaves out the bass, which in a
    mix would otherwise win over the tune, and keeps the register people hum and whistle in."""

    def __init__(self, sample_rate: int = 16_000, frame_rate: float = 12.5, n_fft: int = 2048, midi_lo: int = 48,
                 n_bins: int = 48, quiet_db: float = 30.0):  # fmt: skip
        super().__init__()
        self.save_hyperparameters()
        if (sample_rate / frame_rate) % 1:
            raise ValueError(f"frame_rate {frame_rate} must divide sample_rate {sample_rate} (a whole hop)")
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        fb = semitone_filterbank(sample_rate, n_fft, midi_lo, n_bins)
        fold = F.one_hot((midi_lo + torch.arange(n_bins)) % PITCH_CLASSES, PITCH_CLASSES).float()
        self.register_buffer("fb", fb @ fold, persistent=False)  # STFT bin -> pitch class, in one matmul

    @property
    def sample_rate(self) -> int:
        return int(self.hparams.sample_rate)

    @property
    def frame_rate(self) -> float:
        return float(self.hparams.frame_rate)

    @property
    def num_levels(self) -> int:
        return 1

    @property
    def codebook_size(self) -> int:
        return PITCH_CLASSES + 1

    @torch.no_grad()
    def tokenize(self, wave: Tensor) -> Tensor:
        hp = self.hparams
        hop = round(hp.sample_rate / hp.frame_rate)
        spec = torch.stft(wave.float().to(self.window.device), hp.n_fft, hop, window=self.window, center=True,
                          return_complex=True)  # fmt: skip
        energy = spec.abs().square().transpose(1, 2) @ self.fb  # [B, frames, 12]
        total = energy.sum(-1)
        loud = total > total.amax(dim=-1, keepdim=True) * 10 ** (-hp.quiet_db / 10) + 1e-12
        ids = torch.where(loud, energy.argmax(-1), torch.full_like(total, NO_PITCH, dtype=torch.long))
        return ids[:, None]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="musiclm melody pitch-classes", description=__doc__)
    p.add_argument("--run", required=True)
    p.add_argument("--frame-rate", type=float, default=12.5, help="melody columns per second")
    p.add_argument("--sample-rate", type=int, default=16_000)
    a = p.parse_args(argv)
    module = PitchClassMelody(sample_rate=a.sample_rate, frame_rate=a.frame_rate)
    path = atomic_torch_save(handoff(module), model_path(a.run, "melody"))
    print(f"wrote {path}: {module.num_levels} x {module.codebook_size} pitch-class tokens at {a.frame_rate:g}/s")
