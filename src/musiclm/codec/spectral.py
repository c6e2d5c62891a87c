"""Spectral encoder and iSTFT decoder (Vocos-style head): the codec's `architecture="spectral"`.

Why: a waveform conv codec has to learn its own band-pass filters before its latents can carry pitch, and its
decoder has to learn to oscillate; on 2 CPU cores the demo codec never got there in 8 minutes (notes missing from
every reconstruction). Here the encoder reads STFT log-magnitudes, and the decoder predicts a magnitude and a phase
for every STFT bin, so one output unit already *is* a sinusoid at that bin's frequency. Every layer runs at the
frame rate, which makes wide layers cheap.

Frame t's STFT window is the `window_frames` hops ending where frame t ends: the encoder stays causal, and the
decoder re-synthesises the same window from latents up to frame t. A frame's samples are therefore final once the
next `window_frames - 1` frames are decoded (`lookahead_frames`); streaming decode waits for them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from musiclm.codec.layers import DILATIONS, CausalConv1d, Reduce, ResidualUnit, scale_to_unit_std


def _frame_stack(cin: int, channels: int, cout: int) -> list[nn.Module]:
    """Causal frame-rate stack: 1x1 in, residual units (kernel 3, dilations 1/3/9), kernel-3 out."""
    return [
        CausalConv1d(cin, channels, 1),
        *(ResidualUnit(channels, d, kernel=3) for d in DILATIONS),
        nn.ELU(),
        CausalConv1d(channels, cout, 3),
    ]


def _history(net: nn.Module) -> int:
    """Frames of left context a frame-rate stack looks at."""
    return sum(m.pad for m in net.modules() if isinstance(m, CausalConv1d))


class SpectralEncoder(nn.Module):
    """wave [B, 1, T] (T a multiple of hop) -> latents [B, D, T / hop] from the log-magnitudes of a causal STFT."""

    def __init__(self, hop: int, window_frames: int, channels: int, latent_dim: int):
        super().__init__()
        self.hop, self.n_fft = hop, hop * window_frames
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        self.net = nn.Sequential(*_frame_stack(self.n_fft // 2 + 1, channels, latent_dim))
        # Log-magnitudes sit near -7 with most bins silent: fed raw, a third of the first layer's units start in ELU's
        # flat negative range. `init_from_data` sets these from the first training batch.
        self.register_buffer("feature_mean", torch.zeros(self.n_fft // 2 + 1, 1))
        self.register_buffer("feature_std", torch.ones(()))
        for m in self.modules():  # zero biases, as in the conv encoder (latents start centred on the codebooks)
            if isinstance(m, CausalConv1d):
                nn.init.zeros_(m.conv.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """wave [B, 1, T] -> log-magnitudes [B, bins, T / hop], frame t from the window ending with frame t."""
        x = F.pad(x[:, 0], (self.n_fft - self.hop, 0))
        spec = torch.stft(
            x, self.n_fft, self.hop, window=self.window, center=False, normalized=True, return_complex=True
        )
        return torch.log(spec.abs() + 1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((self.features(x) - self.feature_mean) / self.feature_std)

    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, reduce: Reduce) -> None:
        """First-batch init: per-bin feature mean and overall std from the batch, then latents at unit std.
        A non-finite batch leaves the feature statistics as they are."""
        f = self.features(x)
        mean = reduce(f.mean(dim=(0, 2))[:, None])
        std = reduce((f - mean).std())
        if torch.isfinite(mean).all() and torch.isfinite(std) and std > 1e-6:
            self.feature_mean.copy_(mean), self.feature_std.copy_(std)
        scale_to_unit_std(self.net, (f - self.feature_mean) / self.feature_std, reduce)

    def history_samples(self) -> int:
        return self.n_fft - self.hop + _history(self.net) * self.hop


class ISTFTDecoder(nn.Module):
    """latents [B, D, T] -> wave [B, 1, T * hop]: per frame a log-magnitude and a phase for each STFT bin, inverse
    FFT, Hann-windowed overlap-add normalised by the window envelope."""

    def __init__(self, hop: int, window_frames: int, channels: int, latent_dim: int):
        super().__init__()
        self.hop, self.n_fft, self.window_frames = hop, hop * window_frames, window_frames
        self.bins = self.n_fft // 2 + 1
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        self.net = nn.Sequential(*_frame_stack(latent_dim, channels, 2 * self.bins))
        with torch.no_grad():  # start quiet: unit magnitudes in every bin would be noise at ~40x full scale
            head = self.net[-1].conv
            head.bias.zero_()
            head.bias[: self.bins].fill_(-7.0)

    def forward(self, z: torch.Tensor, start_frame: int = 0) -> torch.Tensor:
        """`start_frame`: index of z's first frame in the whole signal (chunked decoding), for the phase clock."""
        log_mag, phase = self.net(z).float().split(self.bins, dim=1)
        spec = torch.polar(torch.exp(log_mag.clamp(max=4.0)), phase + self._bin_phase(start_frame, z.shape[-1]))
        frames = torch.fft.irfft(spec, n=self.n_fft, dim=1, norm="forward") * self.window[:, None]
        out = self._overlap_add(frames)
        env = self._overlap_add(self.window[None, :, None].expand(1, -1, frames.shape[-1]))
        out = out / env.clamp_min(0.1 * env.max())  # the last window's tail has only one frame (<= 10x gain there)
        return out[..., self.n_fft - self.hop :]

    def _bin_phase(self, start_frame: int, frames: int) -> torch.Tensor:
        """[bins, T] phase of a sinusoid at each bin's centre frequency at the start of each frame.

        The network's phases are relative to it. Predicting absolute per-frame phases, the decoder settles on the same
        phase every frame: its output then repeats every hop, a comb at multiples of the frame rate (50 Hz) that
        erases every note. Relative to the bin clock a steady note is a steady phase, so frames add up coherently.
        Only (frame index mod window_frames) matters, which keeps this cheap and exact for chunks."""
        w = self.window_frames
        t = (start_frame + torch.arange(frames, device=self.window.device)) % w
        k = torch.arange(self.bins, device=self.window.device)
        return (2 * torch.pi / w) * ((k[:, None] * t[None]) % w)

    def _overlap_add(self, frames: torch.Tensor) -> torch.Tensor:
        """[B, n_fft, T] -> [B, 1, (T - 1) * hop + n_fft]."""
        length = (frames.shape[-1] - 1) * self.hop + self.n_fft
        return F.fold(frames, (1, length), (1, self.n_fft), stride=(1, self.hop)).flatten(1, 2)

    def history_frames(self) -> int:
        return _history(self.net)

    def lookahead_frames(self) -> int:
        return self.window_frames - 1
