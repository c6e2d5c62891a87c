"""Discriminators: multi-scale STFT (SoundStream) and multi-period waveform (HiFi-GAN).

Each sub-discriminator returns (logits, feature maps) so the generator can be trained with feature matching.
The STFT discriminator feeds real and imaginary parts as two input channels of real convolutions: complex-valued
convolutions of the same shape were about 8x slower on CPU (docs/measurements.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

Output = tuple[torch.Tensor, list[torch.Tensor]]


class STFTDiscriminator(nn.Module):
    """2-D convs over (time, frequency) of one STFT resolution; strides halve frequency, dilations widen time."""

    def __init__(self, n_fft: int, channels: int = 32, depth: int = 3):
        super().__init__()
        self.n_fft = n_fft
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        convs = [weight_norm(nn.Conv2d(2, channels, (3, 9), padding=(1, 4)))]
        for i in range(depth):
            d = 2**i
            convs.append(
                weight_norm(nn.Conv2d(channels, channels, (3, 9), stride=(1, 2), dilation=(d, 1), padding=(d, 4)))
            )
        convs.append(weight_norm(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1))))
        self.convs = nn.ModuleList(convs)
        self.out = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, wave: torch.Tensor) -> Output:
        spec = torch.stft(wave.float(), self.n_fft, self.n_fft // 4, window=self.window, return_complex=True)
        x = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # [B, 2, frames, freq]
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            feats.append(x)
        return self.out(x), feats


class PeriodDiscriminator(nn.Module):
    """The waveform folded into [T / p, p] columns, so 2-D convs see samples exactly p apart."""

    def __init__(self, period: int, channels: int = 32, depth: int = 3):
        super().__init__()
        self.period = period
        convs, c = [], 1
        for i in range(depth):
            cout = channels * 2**i
            convs.append(weight_norm(nn.Conv2d(c, cout, (5, 1), stride=(3, 1), padding=(2, 0))))
            c = cout
        convs.append(weight_norm(nn.Conv2d(c, c, (5, 1), padding=(2, 0))))
        self.convs = nn.ModuleList(convs)
        self.out = weight_norm(nn.Conv2d(c, 1, (3, 1), padding=(1, 0)))

    def forward(self, wave: torch.Tensor) -> Output:
        x = F.pad(wave, (0, -wave.shape[-1] % self.period), mode="reflect")
        x = x.reshape(x.shape[0], 1, -1, self.period)
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            feats.append(x)
        return self.out(x), feats


class Discriminators(nn.Module):
    """All sub-discriminators; wave [B, T] -> one (logits, features) per sub-discriminator."""

    def __init__(self, stft_ffts: list[int], stft_channels: int, periods: list[int], period_channels: int):
        super().__init__()
        self.subs = nn.ModuleList(
            [STFTDiscriminator(n, stft_channels) for n in stft_ffts]
            + [PeriodDiscriminator(p, period_channels) for p in periods]
        )

    def forward(self, wave: torch.Tensor) -> list[Output]:
        return [d(wave) for d in self.subs]
