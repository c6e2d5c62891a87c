"""Frame-level feature extractors behind one interface: wave [B, T] at `sample_rate` -> [B, frames, dim] at
`frame_rate`. The tokenizer resamples frames in time to its token rate, so any extractor serves any rate.

- `mulan`: a block of our own MuLan audio tower (the default: needs no download),
- `hf`: a local `transformers` self-supervised audio model (HuBERT, wav2vec2, MERT, ...) and a hidden layer,
- `logmel`: the log-mel spectrogram, a baseline.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from musiclm.audio import LogMel


class FeatureExtractor(nn.Module):
    sample_rate: int
    frame_rate: float
    dim: int

    def forward(self, wave: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class MuLanFeatures(FeatureExtractor):
    """Block `layer` of a trained MuLan audio tower (frozen)."""

    def __init__(self, mulan: nn.Module, layer: int):
        super().__init__()
        self.mulan, self.layer = mulan.eval().requires_grad_(False), layer
        self.sample_rate, self.frame_rate = mulan.sample_rate, float(mulan.feature_frame_rate)
        with torch.inference_mode():
            self.dim = int(mulan.audio_features(torch.zeros(1, mulan.window_samples), layer).shape[-1])

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.mulan.audio_features(wave, self.layer)


class HFFeatures(FeatureExtractor):
    """Hidden layer `layer` of a local transformers audio model (conv feature encoder, e.g. wav2vec2/HuBERT/MERT)."""

    def __init__(self, path: str, layer: int, sample_rate: int | None = None):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        config = AutoConfig.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
        if not hasattr(config, "conv_stride"):
            raise ValueError(f"{path}: only models with a conv feature encoder (config.conv_stride) are supported")
        prep = Path(path) / "preprocessor_config.json"
        prep_cfg = json.loads(prep.read_text()) if prep.is_file() else {}
        self.sample_rate = int(sample_rate or prep_cfg.get("sampling_rate", 16_000))
        self.normalize = bool(prep_cfg.get("do_normalize", True))
        self.frame_rate = self.sample_rate / math.prod(config.conv_stride)
        self.layer, self.dim = layer, int(config.hidden_size)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            wave = (wave - wave.mean(-1, keepdim=True)) / (wave.std(-1, keepdim=True) + 1e-7)
        return self.model(wave, output_hidden_states=True).hidden_states[self.layer]


class LogMelFeatures(FeatureExtractor):
    def __init__(self, sample_rate: int, n_mels: int = 80, hop_length: int | None = None):
        super().__init__()
        hop = hop_length or sample_rate // 50
        self.mel = LogMel(sample_rate, n_fft=4 * hop, hop_length=hop, n_mels=n_mels)
        self.sample_rate, self.frame_rate, self.dim = sample_rate, sample_rate / hop, n_mels

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.mel(wave).transpose(1, 2)


def to_rate(feats: torch.Tensor, num_samples: int, sample_rate: int, rate: float) -> torch.Tensor:
    """[B, frames, D] -> [B, round(seconds * rate), D]: area-averaging when reducing the rate, linear otherwise."""
    n = max(1, round(num_samples / sample_rate * rate))
    if feats.shape[1] == n:
        return feats
    x = feats.transpose(1, 2).float()
    x = (
        F.interpolate(x, size=n, mode="area")
        if n < feats.shape[1]
        else F.interpolate(x, size=n, mode="linear", align_corners=False)
    )
    return x.transpose(1, 2)
