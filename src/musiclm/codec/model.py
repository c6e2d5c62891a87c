"""SoundStream generator: encoder -> residual VQ -> decoder.

Two encoder/decoder pairs share the quantizer and the API: "conv" is SoundStream's causal strided conv stack on the
waveform (the paper profile); "spectral" (`musiclm.codec.spectral`) reads STFT magnitudes and decodes through an
inverse STFT, which learns pitch within the demo's CPU minutes. Both are causal at frame granularity, so chunks
coded with enough left context (and, for the iSTFT, `lookahead_frames` of right context) match the full signal.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from vector_quantize_pytorch import ResidualVQ

from musiclm.codec.layers import DILATIONS, CausalConv1d, CausalConvTranspose1d, Reduce, ResidualUnit, scale_to_unit_std
from musiclm.codec.spectral import ISTFTDecoder, SpectralEncoder


class Encoder(nn.Module):
    """wave [B, 1, T] -> latents [B, D, T / prod(strides)]; channels double at each downsampling."""

    def __init__(self, channels: int, strides: list[int], latent_dim: int, kernel: int = 7):
        super().__init__()
        layers: list[nn.Module] = [CausalConv1d(1, channels, kernel)]
        c = channels
        for s in strides:
            layers += [ResidualUnit(c, d, kernel) for d in DILATIONS]
            layers += [nn.ELU(), CausalConv1d(c, 2 * c, 2 * s, stride=s)]
            c *= 2
        layers += [nn.ELU(), CausalConv1d(c, latent_dim, 3)]
        self.net = nn.Sequential(*layers)
        # Zero biases: with PyTorch's default (uniform) biases the latents start as a constant offset with a spread
        # ~50x smaller than it (the signal shrinks through the strided convs, the biases do not), so the optimiser's
        # first bias updates move the whole cloud away from the k-means codebook and the quantizer collapses.
        for m in self.modules():
            if isinstance(m, CausalConv1d):
                nn.init.zeros_(m.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def init_from_data(self, x: torch.Tensor, reduce: Reduce) -> None:
        """First-batch init: latents at unit std. Left alone they come out ~0.01 (each strided conv shrinks the
        signal), far below the decoder's biases, and a small decoder then settles on the average spectrum."""
        scale_to_unit_std(self.net, x, reduce)

    def history_samples(self) -> int:
        """Input samples of left context that determine an output frame (the receptive field's past)."""
        total, rate = 0, 1
        for m in self.modules():
            if isinstance(m, CausalConv1d):
                total += m.pad * rate
                rate *= m.stride
        return total


class Decoder(nn.Module):
    """latents [B, D, T] -> wave [B, 1, T * prod(strides)], mirror of the encoder."""

    def __init__(self, channels: int, strides: list[int], latent_dim: int, kernel: int = 7):
        super().__init__()
        c = channels * 2 ** len(strides)
        layers: list[nn.Module] = [CausalConv1d(latent_dim, c, kernel)]
        for s in reversed(strides):
            layers += [nn.ELU(), CausalConvTranspose1d(c, c // 2, s)]
            c //= 2
            layers += [ResidualUnit(c, d, kernel) for d in DILATIONS]
        layers += [nn.ELU(), CausalConv1d(c, 1, kernel)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, start_frame: int = 0) -> torch.Tensor:
        """`start_frame` is accepted for the decoders' common signature: conv output does not depend on position."""
        return self.net(z)

    def history_frames(self) -> int:
        """Code frames of left context that determine the samples of the current frame."""
        total, rate = 0.0, 1  # rate = samples per frame at the current layer
        for m in self.modules():
            if isinstance(m, CausalConv1d):
                total += m.pad / rate
            elif isinstance(m, CausalConvTranspose1d):
                total += 1 / rate  # kernel 2*stride: each output also sees the previous input frame
                rate *= m.stride
        return math.ceil(total)

    def lookahead_frames(self) -> int:
        return 0


class SoundStream(nn.Module):
    """Encoder, residual VQ with quantizer dropout (one model, every bitrate), decoder."""

    def __init__(
        self,
        channels: int = 32,
        strides: list[int] = (3, 4, 5, 8),
        latent_dim: int = 512,
        kernel: int = 7,
        num_quantizers: int = 12,
        codebook_size: int = 1024,
        quantizer_dropout: bool = True,
        kmeans_iters: int = 10,
        ema_decay: float = 0.99,
        dead_code_threshold: float = 0.5,
        commitment_weight: float = 1.0,
        codebook_dim: int | None = None,
        use_cosine_sim: bool = False,
        architecture: Literal["conv", "spectral"] = "conv",
        window_frames: int = 2,
    ):
        """`channels`: conv, the first (full-rate) layer's width, doubled at each downsampling; spectral, the width of
        every (frame-rate) layer. `strides` set the hop (their product) for both; `window_frames` is the spectral
        STFT window in hops."""
        super().__init__()
        self.strides = list(strides)
        self.hop_length = math.prod(self.strides)
        if architecture == "conv":
            self.encoder = Encoder(channels, self.strides, latent_dim, kernel)
            self.decoder = Decoder(channels, self.strides, latent_dim, kernel)
        elif architecture == "spectral":
            self.encoder = SpectralEncoder(self.hop_length, window_frames, channels, latent_dim)
            self.decoder = ISTFTDecoder(self.hop_length, window_frames, channels, latent_dim)
        else:
            raise ValueError(f"architecture must be 'conv' or 'spectral', got {architecture!r}")
        self.quantizer = ResidualVQ(
            dim=latent_dim,
            codebook_dim=codebook_dim,  # None: quantize the latent itself; else a learned projection to this size
            use_cosine_sim=use_cosine_sim,
            num_quantizers=num_quantizers,
            codebook_size=codebook_size,
            quantize_dropout=quantizer_dropout,
            kmeans_init=True,
            kmeans_iters=kmeans_iters,
            decay=ema_decay,
            threshold_ema_dead_code=dead_code_threshold,
            commitment_weight=commitment_weight,
            sync_codebook=False,  # switched on by musiclm.compat.set_codebook_sync when training starts distributed
            sync_kmeans=True,
        )

    def pad(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, 1, T] right-padded with zeros to a whole number of frames."""
        return F.pad(wave, (0, -wave.shape[-1] % self.hop_length))

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """wave [B, 1, T] -> (reconstruction [B, 1, T'], codes [B, Q, frames] (-1 = dropped level), commit loss)."""
        z = self.encoder(self.pad(wave)).transpose(1, 2)
        q, codes, commit = self.quantizer(z)
        return self.decoder(q.transpose(1, 2)), codes.transpose(1, 2), commit.sum()

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, 1, T] -> codes [B, Q, ceil(T / hop)] (call in eval mode: train mode drops levels)."""
        z = self.encoder(self.pad(wave)).transpose(1, 2)
        _, codes, _ = self.quantizer(z)
        return codes.transpose(1, 2)

    def decode(self, codes: torch.Tensor, start_frame: int = 0) -> torch.Tensor:
        """codes [B, Q', frames], Q' <= Q -> wave [B, 1, frames * hop]; missing levels (or -1) contribute nothing.
        `start_frame`: where these frames sit in the whole signal (chunked decoding)."""
        codes = F.pad(codes, (0, 0, 0, self.quantizer.num_quantizers - codes.shape[1]), value=-1)
        q = self.quantizer.get_output_from_indices(codes.transpose(1, 2))
        return self.decoder(q.transpose(1, 2), start_frame)
