"""Frame-level feature extractors behind one interface: wave [B, T] at `sample_rate` -> [B, frames, dim] at
`frame_rate`. The tokenizer resamples frames in time to its token rate, so any extractor serves any rate.

- `mulan`: a block of our own MuLan audio tower (the default: needs no download),
- `hf`: a local `transformers` self-supervised audio model (w2v-BERT 2.0, HuBERT, wav2vec2; MERT with remote code)
  and a hidden layer,
- `logmel`: the log-mel spectrogram, a baseline.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from musiclm.audio import LogMel, resample_batch
from musiclm.pretrained.hub import PretrainedFolderError, load_pretrained, read_config


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


HF_SEMANTIC_TYPES = ("wav2vec2-bert", "hubert", "wav2vec2")


class HFFeatures(FeatureExtractor):
    """Hidden layer `layer` of a local transformers model: w2v-BERT 2.0 (the paper's family; log-mel filterbank
    input from its `SeamlessM4TFeatureExtractor`), HuBERT or wav2vec 2.0 (waveform input), or a model whose code ships
    in the folder such as MERT, only with `trust_remote_code`. Audio at `sample_rate` (the tokenizer's) is resampled
    here to the model's rate (its preprocessor config's, 16 kHz by default)."""

    def __init__(self, path: str, layer: int, sample_rate: int, trust_remote_code: bool = False):
        super().__init__()
        from transformers import AutoFeatureExtractor

        config = read_config(path, HF_SEMANTIC_TYPES, "semantic features", remote_code=trust_remote_code)
        if not 0 <= layer <= config["num_hidden_layers"]:
            raise PretrainedFolderError(f"{path}: layer {layer} is not in 0..{config['num_hidden_layers']}")
        self.model = load_pretrained(path, trust_remote_code=trust_remote_code)
        prep = Path(path) / "preprocessor_config.json"
        prep_cfg = json.loads(prep.read_text()) if prep.is_file() else {}
        self.sample_rate, self.model_rate = sample_rate, int(prep_cfg.get("sampling_rate", 16_000))
        self.fbank = None
        if config["model_type"] == "wav2vec2-bert":  # 10-ms filterbank frames stacked by `stride`
            self.fbank = AutoFeatureExtractor.from_pretrained(path, local_files_only=True)
            self.frame_rate = 100 / self.fbank.stride
        else:
            self.frame_rate = self.model_rate / math.prod(config["conv_stride"])
        self.normalize = bool(prep_cfg.get("do_normalize", True))
        self.layer, self.dim = layer, int(config["hidden_size"])

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        wave = resample_batch(wave.float(), self.sample_rate, self.model_rate)
        device = next(self.model.parameters()).device
        if self.fbank is not None:
            inputs = self.fbank(list(wave.cpu().numpy()), sampling_rate=self.model_rate, return_tensors="pt")
            return self.model(**inputs.to(device), output_hidden_states=True).hidden_states[self.layer]
        if self.normalize:
            wave = (wave - wave.mean(-1, keepdim=True)) / (wave.std(-1, keepdim=True) + 1e-7)
        return self.model(wave.to(device), output_hidden_states=True).hidden_states[self.layer]


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
