"""Causal convolution building blocks shared by the codec's waveform and spectral generators.

Every convolution is causal at frame granularity, so a chunk encoded (or decoded) with enough left context gives
exactly the full-signal result: that is how streaming works (`history_samples` / `history_frames` say how much
context is enough).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class CausalConv1d(nn.Module):
    """Weight-normed Conv1d padded on the left only: output frame t sees inputs up to the end of its own stride.

    `pointwise_matmul` (set by `CodecModule.compile_inference`, never in training): a kernel-1 conv runs as a matmul,
    which inductor fuses with its neighbours and which bf16 autocast sends to the bf16 matmul units. The same sums;
    training keeps the conv, so trained models do not depend on the flag."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = weight_norm(nn.Conv1d(cin, cout, kernel, stride=stride, dilation=dilation))
        self.pad = (kernel - 1) * dilation + 1 - stride
        self.stride = stride
        self.pointwise = kernel == 1 and stride == 1
        self.pointwise_matmul = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pointwise and self.pointwise_matmul and not self.training:
            return torch.matmul(self.conv.weight[:, :, 0], x) + self.conv.bias[:, None]
        return self.conv(F.pad(x, (self.pad, 0)) if self.pad else x)  # F.pad copies even when it pads nothing


class CausalConvTranspose1d(nn.Module):
    """Weight-normed transposed conv (kernel 2*stride) trimmed on the right so T frames give exactly T*stride."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv = weight_norm(nn.ConvTranspose1d(cin, cout, 2 * stride, stride=stride))
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)[..., : x.shape[-1] * self.stride]


class ResidualUnit(nn.Module):
    def __init__(self, channels: int, dilation: int, kernel: int = 7):
        super().__init__()
        self.conv = CausalConv1d(channels, channels, kernel, dilation=dilation)
        self.proj = CausalConv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(F.elu(self.conv(F.elu(x)), inplace=True))  # the conv's output is used once


DILATIONS = (1, 3, 9)


Reduce = Callable[[torch.Tensor], torch.Tensor]  # averages a statistic across processes (identity in one process)


@torch.no_grad()
def scale_to_unit_std(net: nn.Sequential, x: torch.Tensor, reduce: Reduce) -> None:
    """Data-dependent init (weight norm's own, Salimans & Kingma 2016): rescale `net`'s last layer, a zero-bias
    CausalConv1d, so that net(x) has unit std. The std goes through `reduce` so every replica applies the same
    factor; a silent or non-finite batch leaves the weights as they are."""
    std = reduce(net(x).std())
    if torch.isfinite(std) and std > 1e-8:
        net[-1].conv.parametrizations.weight.original0.div_(std)
